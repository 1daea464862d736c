import assert from "node:assert/strict";
import { cap, launch, makeEnv, rejectsCode } from "./_helpers.ts";

Deno.test("smoke: a granted read succeeds and an ungranted one is EPERM", async () => {
  await using env = await makeEnv({ files: { "a.txt": "hello", "b.txt": "nope" } });
  const pid = await launch(env, [cap("filesystem:workspace:a.txt", "read")]);
  assert.equal(await env.rt.syscall(pid, "filesystem.read", { path: "a.txt" }), "hello");
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "b.txt" }), "EPERM");
});
