/**
 * The effect ledger around external effects: the intent is durable before the
 * provider acts, the outcome after. A crash in between leaves `pending`, which
 * recovery marks `unknown` and never replays.
 * @module
 */
import { payloadRef } from "../runtime/canonical.ts";
import { toLibosError } from "../runtime/errors.ts";
import type { Call } from "./call.ts";

/**
 * Run `act` as a ledgered external effect on `resource`. `endsBy` (epoch ms,
 * the real clock) is when the effect has surely ended even if this runtime
 * stalls (an OS-enforced deadline `act` holds to): recorded with the intent,
 * so that no other runtime asks a human about it before then.
 */
export async function withEffect<T>(
  call: Call,
  resource: string,
  act: () => Promise<T>,
  summarize: (value: T) => unknown = (v) => payloadRef(v),
  endsBy?: number,
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
    ...(endsBy === undefined ? {} : { ends_by: new Date(endsBy).toISOString() }),
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
