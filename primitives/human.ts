/**
 * human.output: showing text to a human is an effect, and a sink with a label
 * (the policy's `human_clearance`): data above it never reaches the human.
 * @module
 */
import { invalid } from "../runtime/errors.ts";
import { authorize } from "./authorize.ts";
import { optStr, type Primitive, str } from "./call.ts";
import { withEffect } from "./effects.ts";
import { checkFlow } from "./filesystem.ts";

/** The human family. */
export const HUMAN: Record<string, Primitive> = {
  "human.output": {
    fields: ["text", "to"],
    async run(call) {
      const text = str(call, "text", 100_000);
      const to = optStr(call, "to", 64) ?? "owner";
      if (!/^[a-z][a-z0-9_-]{0,63}$/.test(to)) throw invalid(`${call.name}.to`, "malformed name");
      call.target = `human:${to}`;
      await authorize(call, { resource: call.target, right: "write" });
      await checkFlow(call, call.proc.policy.human_clearance, call.target);
      await withEffect(call, call.target, () => call.k.providers.human.output(call.proc.pid, text));
      await call.k.emit("human.output", `pid:${call.proc.pid}`, call.target, {
        chars: text.length,
      }, call.correlationId);
      return { shown: true };
    },
  },
};
