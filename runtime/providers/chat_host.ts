/**
 * The host's chat providers: the official SDKs at the base URL the host chose,
 * with keys from the runtime's environment (`OPENAI_API_KEY`,
 * `ANTHROPIC_API_KEY`).
 * @module
 */
import { AnthropicChat } from "./anthropic.ts";
import type { ChatProvider } from "./chat.ts";
import { OpenAIChat } from "./openai.ts";

/** Makes the chat provider of an endpoint. */
export type ChatFactory = (
  provider: "openai" | "anthropic",
  baseUrl: string | null,
) => ChatProvider;

const _made = new Map<string, ChatProvider>();

/** The real providers (one per endpoint, reused). */
export const hostChat: ChatFactory = (
  provider: "openai" | "anthropic",
  baseUrl: string | null,
): ChatProvider => {
  const key = `${provider} ${baseUrl ?? ""}`;
  let p = _made.get(key);
  if (!p) {
    p = provider === "openai" ? new OpenAIChat({ baseUrl }) : new AnthropicChat({ baseUrl });
    _made.set(key, p);
  }
  return p;
};
