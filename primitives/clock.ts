/**
 * clock.* primitives: reading the time and sleeping are effects too.
 * @module
 */
import { authorize } from "./authorize.ts";
import { int, type Primitive } from "./call.ts";

/** Longest single sleep. */
export const MAX_SLEEP_MS = 60_000;

/** The clock family. */
export const CLOCK: Record<string, Primitive> = {
  "clock.now": {
    fields: [],
    async run(call) {
      call.target = "clock:now";
      await authorize(call, { resource: call.target, right: "read" });
      const ms = call.k.providers.clock.now();
      return { epoch_ms: ms, iso: new Date(ms).toISOString() };
    },
  },
  "clock.sleep": {
    fields: ["ms"],
    async run(call) {
      const ms = int(call, "ms", 0, MAX_SLEEP_MS);
      call.target = "clock:sleep";
      await authorize(call, { resource: call.target, right: "execute" });
      await call.k.providers.clock.sleep(ms);
      return { slept_ms: ms };
    },
  },
};
