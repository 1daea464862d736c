/**
 * The `sandbox` runner's subprocess: performs one file or shell syscall with
 * host APIs under whatever Deno permission flags it was started with (derived
 * from the scenario's grants), and prints the outcome as one JSON line. A
 * permission the flags do not give surfaces as EPERM; nothing else is checked.
 *
 * stdin: `{"name", "args", "ctx": {"ws", "cwd"}}`;
 * stdout: `{"ok": true, "value"}` or `{"ok": false, "error": {"code", "message"}}`.
 * @module
 */
import { hostCall, hostErrorCode } from "./hostcalls.ts";

if (import.meta.main) {
  const req = JSON.parse(await new Response(Deno.stdin.readable).text());
  let out: unknown;
  try {
    out = { ok: true, value: await hostCall(req.name, req.args ?? {}, req.ctx) };
  } catch (e) {
    out = {
      ok: false,
      error: { code: hostErrorCode(e), message: e instanceof Error ? e.message : String(e) },
    };
  }
  await Deno.stdout.write(new TextEncoder().encode(JSON.stringify(out) + "\n"));
}
