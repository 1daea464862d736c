/**
 * The effect ledger around external effects: the intent is durable before the
 * provider acts, the outcome after. A crash in between leaves `pending`, which
 * recovery marks `unknown` and never replays.
 * @module
 */
import { payloadRef } from "../runtime/canonical.ts";
import { toLibosError } from "../runtime/errors.ts";
import type { Call } from "./call.ts";

/** Run `act` as a ledgered external effect on `resource`. */
export async function withEffect<T>(
  call: Call,
  resource: string,
  act: () => Promise<T>,
  summarize: (value: T) => unknown = (v) => payloadRef(v),
): Promise<T> {
  const k = call.k;
  const effect_id = k.newId("fx");
  await k.store.insertEffect({
    effect_id,
    pid: call.proc.pid,
    syscall: call.name,
    resource,
    args_hash: call.argsHash,
    status: "pending",
    outcome: null,
    created_at: k.now(),
    finished_at: null,
  });
  let value: T;
  try {
    value = await act();
  } catch (e) {
    await k.store.finishEffect(effect_id, "failed", toLibosError(e).toJSON(), k.now());
    throw e;
  }
  await k.store.finishEffect(effect_id, "done", summarize(value), k.now());
  return value;
}
