/**
 * Pure capability logic: resource grammar, wildcard matching, the precedence
 * rule of `decide`, delegation narrowing and spec/flag parsing.
 */
import assert from "node:assert/strict";
import {
  decide,
  isLive,
  MAX_DELEGATION_DEPTH,
  narrowingViolation,
  parseCapabilitySpec,
  parseGrantFlag,
  parseResource,
  resourceCovers,
  resourceMatches,
  restrictionMatches,
} from "../runtime/capabilities.ts";
import { LibosError } from "../runtime/errors.ts";
import { ScriptedHuman } from "../runtime/providers/scripted.ts";
import type { Binding, Capability, CapabilitySpec } from "../runtime/types.ts";
import { capRecord, launch, makeEnv, rejectsCode } from "./_helpers.ts";

// ---- local helpers

const NOW = Date.parse("2030-01-01T00:00:00.000Z");
const PAST = "2029-12-31T23:59:59.000Z";
const FUTURE = "2030-06-01T00:00:00.000Z";
const NO_BINDING: Binding = { syscall: "filesystem.read", args_hash: "h-none" };

let _n = 0;
/** A live host-granted allow capability, with overrides. */
function mk(resource: string, over: Partial<Capability> = {}): Capability {
  return capRecord({
    cap_id: `cap${++_n}`,
    resource,
    rights: ["read"],
    created_at: "2030-01-01T00:00:00.000Z",
    ...over,
  });
}

/** Assert `fn` throws EINVAL whose message starts with `field:`. */
function throwsInvalid(fn: () => unknown, field: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof LibosError, `expected LibosError, got ${String(e)}`);
    assert.equal(e.code, "EINVAL");
    assert.ok(
      e.message.startsWith(`${field}:`),
      `expected message naming '${field}', got '${e.message}'`,
    );
    return true;
  });
}

const FS = "filesystem:workspace:";

// ---- parseResource

Deno.test("capabilities: every resource family is accepted", () => {
  const good = [
    "filesystem:workspace:src/a.ts",
    "filesystem:workspace:*",
    "filesystem:workspace:src/*",
    "filesystem:workspace:.",
    "shell:git",
    "shell:*",
    "human:owner",
    "clock:now",
    "object:obj_1",
    "object_namespace:proc:1",
    "process:3",
    "process:*",
    "image:coder",
    "skill:refactor",
    "checkpoint:process:4",
    "checkpoint:process:*",
    "jsonrpc:local:tools/list",
    "jsonrpc:local:*",
    "mcp:github:create_issue",
    "mcp:github:*",
  ];
  for (const r of good) assert.equal(parseResource(r), r, r);
});

Deno.test("capabilities: an unknown resource family is refused", () => {
  throwsInvalid(() => parseResource("network:example.com"), "resource");
  throwsInvalid(() => parseResource("Filesystem:workspace:a"), "resource");
  throwsInvalid(() => parseResource("nofamily"), "resource");
  throwsInvalid(() => parseResource(":x"), "resource");
});

Deno.test("capabilities: bare * is refused", () => {
  throwsInvalid(() => parseResource("*"), "resource");
  throwsInvalid(() => parseGrantFlag("*=read"), "--grant");
  throwsInvalid(
    () => parseCapabilitySpec({ resource: "*", rights: ["read"] }),
    "capability.resource",
  );
  // A family whose name is a wildcard is no better.
  throwsInvalid(() => parseResource("*:x"), "resource");
});

Deno.test("capabilities: empty, non-string and malformed resources are refused", () => {
  throwsInvalid(() => parseResource(""), "resource");
  throwsInvalid(() => parseResource(42), "resource");
  throwsInvalid(() => parseResource(null), "resource");
  throwsInvalid(() => parseResource("shell:"), "resource");
  throwsInvalid(() => parseResource("filesystem:workspace:"), "resource");
  throwsInvalid(() => parseResource("filesystem:src/a"), "resource"); // not workspace
  throwsInvalid(() => parseResource("filesystem:*"), "resource");
  throwsInvalid(() => parseResource("checkpoint:process"), "resource");
  throwsInvalid(() => parseResource("jsonrpc:endpoint:"), "resource");
  throwsInvalid(() => parseResource("mcp::tool"), "resource");
  throwsInvalid(() => parseResource(FS + "x".repeat(4096)), "resource");
});

Deno.test("capabilities: '.' and '..' path segments are refused (resolved paths never match them)", () => {
  for (const bad of [FS + "./a.txt", FS + "src/./a.ts", FS + "src/.", FS + "../x", FS + "a/../b"]) {
    throwsInvalid(() => parseResource(bad), "resource");
  }
  // '.' alone is the workspace root, which resolution does produce.
  assert.equal(parseResource(FS + "."), FS + ".");
});

Deno.test("capabilities: wildcards only as the whole last segment", () => {
  for (
    const bad of [
      FS + "src*",
      FS + "a/*/b",
      FS + "*/b",
      FS + "src/a*",
      FS + "src/**",
      FS + "*.ts",
      "shell:g*t",
      "shell:git*",
      "shell:**",
      "jsonrpc:*:method",
      "mcp:srv*:tool",
      "mcp:srv:to*",
      "checkpoint:*:4",
      "process:1*",
    ]
  ) {
    throwsInvalid(() => parseResource(bad), "resource");
  }
  // The same grammar applies wherever a resource is parsed.
  throwsInvalid(() => parseGrantFlag(FS + "src*=read"), "--grant");
});

Deno.test("capabilities: '..' and absolute paths are refused in filesystem resources", () => {
  for (
    const bad of [
      FS + "..",
      FS + "../x",
      FS + "a/../../x",
      FS + "a/..",
      FS + "../*",
      FS + "/etc/passwd",
      FS + "/",
      FS + "/*",
      FS + "a//b",
      FS + "src/",
    ]
  ) {
    throwsInvalid(() => parseResource(bad), "resource");
  }
  // A name that merely contains dots is fine.
  assert.equal(parseResource(FS + "a..b/..c"), FS + "a..b/..c");
});

Deno.test("capabilities: control characters are refused in resources", () => {
  for (const c of ["\u0000", "\n", "\r", "\t", "\u001b", "\u001f"]) {
    throwsInvalid(() => parseResource(`${FS}a${c}b`), "resource");
    throwsInvalid(() => parseResource(`shell:g${c}`), "resource");
  }
});

Deno.test("capabilities: parseResource names the given field", () => {
  throwsInvalid(() => parseResource("*", "grants[2].resource"), "grants[2].resource");
});

// ---- resourceMatches / resourceCovers

Deno.test("capabilities: src/* matches everything below src", () => {
  assert.equal(resourceMatches(FS + "src/*", FS + "src/a"), true);
  assert.equal(resourceMatches(FS + "src/*", FS + "src/a/b"), true);
  assert.equal(resourceMatches(FS + "src/*", FS + "src/a/b/c.ts"), true);
});

Deno.test("capabilities: src/* does not match src2 or src itself", () => {
  assert.equal(resourceMatches(FS + "src/*", FS + "src2/x"), false);
  assert.equal(resourceMatches(FS + "src/*", FS + "src2"), false);
  assert.equal(resourceMatches(FS + "src/*", FS + "src"), false);
  assert.equal(resourceMatches(FS + "src/*", FS + "srcx/a"), false);
  assert.equal(resourceMatches(FS + "src/*", FS + "other/src/a"), false);
  assert.equal(resourceMatches("shell:*", "shell:"), false);
});

Deno.test("capabilities: filesystem:workspace:* covers the workspace root '.'", () => {
  assert.equal(resourceMatches(FS + "*", FS + "."), true);
  assert.equal(resourceMatches(FS + "*", FS + "a"), true);
  assert.equal(resourceMatches(FS + "*", FS + "a/b/c"), true);
  // ...but only filesystem resources.
  assert.equal(resourceMatches(FS + "*", "shell:git"), false);
  // A narrower wildcard does not cover the root.
  assert.equal(resourceMatches(FS + "src/*", FS + "."), false);
});

Deno.test("capabilities: an exact resource matches only itself", () => {
  assert.equal(resourceMatches(FS + "a.txt", FS + "a.txt"), true);
  assert.equal(resourceMatches(FS + "a.txt", FS + "a.txt2"), false);
  assert.equal(resourceMatches(FS + "a.txt", FS + "a"), false);
  assert.equal(resourceMatches(FS + "src", FS + "src/a"), false);
  assert.equal(resourceMatches("shell:git", "shell:gitk"), false);
  assert.equal(resourceMatches("shell:git", "shell:*"), false);
});

Deno.test("capabilities: family wildcards stay inside their family and prefix", () => {
  assert.equal(resourceMatches("shell:*", "shell:git"), true);
  assert.equal(resourceMatches("shell:*", "human:owner"), false);
  assert.equal(resourceMatches("mcp:github:*", "mcp:github:create_issue"), true);
  assert.equal(resourceMatches("mcp:github:*", "mcp:githubx:create_issue"), false);
  assert.equal(resourceMatches("process:*", "process:12"), true);
  assert.equal(resourceMatches("process:*", "processes:12"), false);
});

Deno.test("capabilities: resourceCovers accepts only equal or narrower patterns", () => {
  // Equal or narrower.
  assert.equal(resourceCovers(FS + "src/*", FS + "src/*"), true);
  assert.equal(resourceCovers(FS + "src/*", FS + "src/a/*"), true);
  assert.equal(resourceCovers(FS + "src/*", FS + "src/a"), true);
  assert.equal(resourceCovers(FS + "*", FS + "src/*"), true);
  assert.equal(resourceCovers(FS + "*", FS + "."), true);
  assert.equal(resourceCovers(FS + "*", FS + "*"), true);
  assert.equal(resourceCovers(FS + "a.txt", FS + "a.txt"), true);
  assert.equal(resourceCovers("shell:*", "shell:git"), true);
  // Wider or disjoint.
  assert.equal(resourceCovers(FS + "src/*", FS + "*"), false);
  assert.equal(resourceCovers(FS + "src/a/*", FS + "src/*"), false);
  assert.equal(resourceCovers(FS + "src/*", FS + "src2/*"), false);
  assert.equal(resourceCovers(FS + "src/*", FS + "src2/x"), false);
  assert.equal(resourceCovers(FS + "src/*", FS + "src"), false);
  assert.equal(resourceCovers(FS + "src/*", FS + "."), false);
  assert.equal(resourceCovers(FS + "src/a", FS + "src/*"), false);
  assert.equal(resourceCovers(FS + "a.txt", FS + "b.txt"), false);
  assert.equal(resourceCovers("shell:git", "shell:*"), false);
  assert.equal(resourceCovers(FS + "*", "shell:*"), false);
});

// ---- decide: precedence

Deno.test("capabilities: no matching capability is deny", () => {
  const d = decide([], FS + "a", "read", NO_BINDING, NOW);
  assert.equal(d.effect, "deny");
  assert.equal(d.cap, null);
  const d2 = decide(
    [mk(FS + "b"), mk("shell:*", { rights: ["execute"] }), mk(FS + "src/*")],
    FS + "a",
    "read",
    NO_BINDING,
    NOW,
  );
  assert.equal(d2.effect, "deny");
  assert.equal(d2.cap, null);
});

Deno.test("capabilities: a matching allow allows and names the capability", () => {
  const c = mk(FS + "src/*");
  const d = decide([mk(FS + "other"), c], FS + "src/x.ts", "read", NO_BINDING, NOW);
  assert.equal(d.effect, "allow");
  assert.equal(d.cap?.cap_id, c.cap_id);
});

Deno.test("capabilities: deny beats allow", () => {
  const allow = mk(FS + "*", { rights: ["read", "write"] });
  const deny = mk(FS + "secrets/*", { effect: "deny", rights: ["read"] });
  for (const caps of [[allow, deny], [deny, allow]]) {
    const d = decide(caps, FS + "secrets/key", "read", NO_BINDING, NOW);
    assert.equal(d.effect, "deny");
    assert.equal(d.cap?.cap_id, deny.cap_id);
  }
  // The deny only covers its own right and resource.
  assert.equal(decide([allow, deny], FS + "secrets/key", "write", NO_BINDING, NOW).effect, "allow");
  assert.equal(decide([allow, deny], FS + "public/x", "read", NO_BINDING, NOW).effect, "allow");
});

Deno.test("capabilities: deny beats a human allow and an exact one-shot binding", () => {
  const binding: Binding = { syscall: "filesystem.read", args_hash: "h1" };
  const bound = mk(FS + "a", {
    constraints: { binding },
    uses_remaining: 1,
    issued_by: "human:owner",
  });
  const human = mk(FS + "a", { issued_by: "human:owner" });
  const deny = mk(FS + "*", { effect: "deny" });
  const d = decide([bound, human, deny], FS + "a", "read", binding, NOW);
  assert.equal(d.effect, "deny");
  assert.equal(d.cap?.cap_id, deny.cap_id);
  assert.equal(d.humanConsent, false);
});

Deno.test("capabilities: one-shot binding beats ask", () => {
  const binding: Binding = { syscall: "shell.exec", args_hash: "abc" };
  const ask = mk("shell:*", { effect: "ask", rights: ["execute"] });
  const bound = mk("shell:git", {
    rights: ["execute"],
    constraints: { binding },
    uses_remaining: 1,
    issued_by: "human:owner",
  });
  for (const caps of [[ask, bound], [bound, ask]]) {
    const d = decide(caps, "shell:git", "execute", binding, NOW);
    assert.equal(d.effect, "allow");
    assert.equal(d.cap?.cap_id, bound.cap_id);
    assert.equal(d.humanConsent, true);
  }
});

Deno.test("capabilities: a binding only matches the exact syscall and args hash", () => {
  const binding: Binding = { syscall: "shell.exec", args_hash: "abc" };
  const ask = mk("shell:*", { effect: "ask", rights: ["execute"] });
  const bound = mk("shell:git", {
    rights: ["execute"],
    constraints: { binding },
    uses_remaining: 1,
  });
  const otherArgs = decide([ask, bound], "shell:git", "execute", {
    syscall: "shell.exec",
    args_hash: "abd",
  }, NOW);
  assert.equal(otherArgs.effect, "ask");
  assert.equal(otherArgs.cap?.cap_id, ask.cap_id);
  const otherSyscall = decide([ask, bound], "shell:git", "execute", {
    syscall: "shell.spawn",
    args_hash: "abc",
  }, NOW);
  assert.equal(otherSyscall.effect, "ask");
  // Alone, a non-matching binding grants nothing at all.
  const alone = decide(
    [bound],
    "shell:git",
    "execute",
    { syscall: "shell.exec", args_hash: "x" },
    NOW,
  );
  assert.equal(alone.effect, "deny");
  assert.equal(alone.cap, null);
  // And a matching binding still needs the resource to match.
  assert.equal(decide([bound], "shell:rm", "execute", binding, NOW).effect, "deny");
});

Deno.test("capabilities: ask beats allow", () => {
  const allow = mk(FS + "*", { rights: ["write"] });
  const ask = mk(FS + "deploy/*", { effect: "ask", rights: ["write"] });
  for (const caps of [[allow, ask], [ask, allow]]) {
    const d = decide(caps, FS + "deploy/prod.yaml", "write", NO_BINDING, NOW);
    assert.equal(d.effect, "ask");
    assert.equal(d.cap?.cap_id, ask.cap_id);
  }
  assert.equal(decide([allow, ask], FS + "src/a", "write", NO_BINDING, NOW).effect, "allow");
});

Deno.test("capabilities: a human always_allow answers an ask, a host allow does not", () => {
  const ask = mk("shell:*", { effect: "ask", rights: ["execute"] });
  const hostAllow = mk("shell:git", { rights: ["execute"] });
  const humanAllow = mk("shell:git", { rights: ["execute"], issued_by: "human:owner" });
  const d = decide([ask, hostAllow, humanAllow], "shell:git", "execute", NO_BINDING, NOW);
  assert.equal(d.effect, "allow");
  assert.equal(d.cap?.cap_id, humanAllow.cap_id);
  assert.equal(d.humanConsent, true);
  assert.equal(decide([ask, hostAllow], "shell:git", "execute", NO_BINDING, NOW).effect, "ask");
  // The human's answer covers only what it was given for.
  assert.equal(decide([ask, humanAllow], "shell:rm", "execute", NO_BINDING, NOW).effect, "ask");
  // And never outranks a deny.
  const deny = mk("shell:git", { effect: "deny", rights: ["execute"] });
  assert.equal(
    decide([ask, humanAllow, deny], "shell:git", "execute", NO_BINDING, NOW).effect,
    "deny",
  );
});

Deno.test("capabilities: the right must be among the capability's rights", () => {
  const c = mk(FS + "*", { rights: ["read", "write"] });
  assert.equal(decide([c], FS + "a", "read", NO_BINDING, NOW).effect, "allow");
  assert.equal(decide([c], FS + "a", "write", NO_BINDING, NOW).effect, "allow");
  assert.equal(decide([c], FS + "a", "delete", NO_BINDING, NOW).effect, "deny");
  assert.equal(decide([c], FS + "a", "admin", NO_BINDING, NOW).effect, "deny");
  // A deny on another right does not deny this one.
  const deny = mk(FS + "*", { effect: "deny", rights: ["delete"] });
  assert.equal(decide([c, deny], FS + "a", "read", NO_BINDING, NOW).effect, "allow");
});

Deno.test("capabilities: expired capabilities grant nothing", () => {
  const expired = mk(FS + "*", { expires_at: PAST });
  assert.equal(isLive(expired, NOW), false);
  assert.equal(decide([expired], FS + "a", "read", NO_BINDING, NOW).effect, "deny");
  // Expiry exactly now is expired too.
  const atNow = mk(FS + "*", { expires_at: new Date(NOW).toISOString() });
  assert.equal(decide([atNow], FS + "a", "read", NO_BINDING, NOW).effect, "deny");
  const live = mk(FS + "*", { expires_at: FUTURE });
  assert.equal(decide([live], FS + "a", "read", NO_BINDING, NOW).effect, "allow");
  // An expired deny or ask no longer restricts.
  const oldDeny = mk(FS + "*", { effect: "deny", expires_at: PAST });
  const oldAsk = mk(FS + "*", { effect: "ask", expires_at: PAST });
  const d = decide([oldDeny, oldAsk, live], FS + "a", "read", NO_BINDING, NOW);
  assert.equal(d.effect, "allow");
  assert.equal(d.cap?.cap_id, live.cap_id);
});

Deno.test("capabilities: used-up, revoked and exhausted capabilities grant nothing", () => {
  const used = mk(FS + "*", { uses_remaining: 0 });
  const revoked = mk(FS + "*", { status: "revoked" });
  const exhausted = mk(FS + "*", { status: "exhausted", uses_remaining: 0 });
  for (const c of [used, revoked, exhausted]) {
    assert.equal(isLive(c, NOW), false, c.cap_id);
    const d = decide([c], FS + "a", "read", NO_BINDING, NOW);
    assert.equal(d.effect, "deny");
    assert.equal(d.cap, null);
  }
  const binding: Binding = { syscall: "filesystem.read", args_hash: "h" };
  const spentOneShot = mk(FS + "a", { constraints: { binding }, uses_remaining: 0 });
  assert.equal(decide([spentOneShot], FS + "a", "read", binding, NOW).effect, "deny");
  const oneLeft = mk(FS + "*", { uses_remaining: 1 });
  assert.equal(decide([oneLeft], FS + "a", "read", NO_BINDING, NOW).effect, "allow");
});

Deno.test("capabilities: decide prefers an unlimited allow over a limited one", () => {
  const limited = mk(FS + "*", { uses_remaining: 2 });
  const unlimited = mk(FS + "a", {});
  const d = decide([limited, unlimited], FS + "a", "read", NO_BINDING, NOW);
  assert.equal(d.cap?.cap_id, unlimited.cap_id);
});

// ---- narrowingViolation

Deno.test("capabilities: a narrower delegation is legal", () => {
  const parent = mk(FS + "src/*", {
    rights: ["read", "write"],
    expires_at: FUTURE,
    uses_remaining: 5,
  });
  assert.equal(
    narrowingViolation(parent, {
      resource: FS + "src/lib/*",
      rights: ["read"],
      expires_at: "2030-03-01T00:00:00.000Z",
      uses_remaining: 5,
    }, NOW),
    null,
  );
  const open = mk(FS + "*", { rights: ["read", "write"] });
  assert.equal(narrowingViolation(open, { resource: FS + "a.txt", rights: ["write"] }, NOW), null);
  assert.equal(
    narrowingViolation(open, { resource: FS + "*", rights: ["read", "write"] }, NOW),
    null,
  );
});

Deno.test("capabilities: delegation refuses a wider resource", () => {
  const parent = mk(FS + "src/*", { rights: ["read"] });
  for (const r of [FS + "*", FS + "src2/*", FS + "src", FS + ".", FS + "other.txt", "shell:*"]) {
    const v = narrowingViolation(parent, { resource: r, rights: ["read"] }, NOW);
    assert.ok(v !== null && v.includes("wider"), `${r}: ${v}`);
  }
});

Deno.test("capabilities: delegation refuses an extra right", () => {
  const parent = mk(FS + "*", { rights: ["read"] });
  const v = narrowingViolation(parent, { resource: FS + "a", rights: ["read", "write"] }, NOW);
  assert.ok(v !== null && v.includes("write"), String(v));
  assert.notEqual(narrowingViolation(parent, { resource: FS + "a", rights: ["admin"] }, NOW), null);
});

Deno.test("capabilities: delegation refuses a later expiry or no expiry under an expiring parent", () => {
  const parent = mk(FS + "*", { expires_at: FUTURE });
  const later = new Date(Date.parse(FUTURE) + 1000).toISOString();
  assert.notEqual(
    narrowingViolation(parent, { resource: FS + "a", rights: ["read"], expires_at: later }, NOW),
    null,
  );
  assert.notEqual(narrowingViolation(parent, { resource: FS + "a", rights: ["read"] }, NOW), null);
  assert.notEqual(
    narrowingViolation(parent, { resource: FS + "a", rights: ["read"], expires_at: null }, NOW),
    null,
  );
  assert.equal(
    narrowingViolation(parent, { resource: FS + "a", rights: ["read"], expires_at: FUTURE }, NOW),
    null,
  );
});

Deno.test("capabilities: delegation refuses more uses or unlimited uses under a limited parent", () => {
  const parent = mk(FS + "*", { uses_remaining: 3 });
  assert.notEqual(
    narrowingViolation(parent, { resource: FS + "a", rights: ["read"], uses_remaining: 4 }, NOW),
    null,
  );
  assert.notEqual(narrowingViolation(parent, { resource: FS + "a", rights: ["read"] }, NOW), null);
  assert.equal(
    narrowingViolation(parent, { resource: FS + "a", rights: ["read"], uses_remaining: 3 }, NOW),
    null,
  );
});

Deno.test("capabilities: a non-delegable capability cannot be delegated", () => {
  const parent = mk(FS + "*", { delegable: false });
  const v = narrowingViolation(parent, { resource: FS + "a", rights: ["read"] }, NOW);
  assert.ok(v !== null && v.includes("not delegable"), String(v));
});

Deno.test("capabilities: deny, ask and binding capabilities cannot be delegated", () => {
  const spec: CapabilitySpec = { resource: FS + "a", rights: ["read"] };
  assert.notEqual(narrowingViolation(mk(FS + "*", { effect: "deny" }), spec, NOW), null);
  assert.notEqual(narrowingViolation(mk(FS + "*", { effect: "ask" }), spec, NOW), null);
  const bound = mk(FS + "a", {
    constraints: { binding: { syscall: "filesystem.read", args_hash: "h" } },
    uses_remaining: 1,
  });
  const v = narrowingViolation(bound, { ...spec, uses_remaining: 1 }, NOW);
  assert.ok(v !== null && v.includes("one-shot"), String(v));
  // A delegation may not turn itself into something other than allow.
  assert.notEqual(narrowingViolation(mk(FS + "*"), { ...spec, effect: "ask" }, NOW), null);
  assert.notEqual(narrowingViolation(mk(FS + "*"), { ...spec, effect: "deny" }, NOW), null);
});

Deno.test("capabilities: dead capabilities cannot be delegated", () => {
  const spec: CapabilitySpec = { resource: FS + "a", rights: ["read"] };
  assert.notEqual(narrowingViolation(mk(FS + "*", { status: "revoked" }), spec, NOW), null);
  assert.notEqual(narrowingViolation(mk(FS + "*", { expires_at: PAST }), spec, NOW), null);
  assert.notEqual(
    narrowingViolation(mk(FS + "*", { uses_remaining: 0 }), { ...spec, uses_remaining: 1 }, NOW),
    null,
  );
});

Deno.test("capabilities: delegation depth is limited to MAX_DELEGATION_DEPTH", () => {
  const spec: CapabilitySpec = { resource: FS + "a", rights: ["read"] };
  assert.equal(MAX_DELEGATION_DEPTH, 8);
  assert.equal(
    narrowingViolation(mk(FS + "*", { delegation_depth: MAX_DELEGATION_DEPTH - 1 }), spec, NOW),
    null,
  );
  const v = narrowingViolation(mk(FS + "*", { delegation_depth: MAX_DELEGATION_DEPTH }), spec, NOW);
  assert.ok(v !== null && v.includes("depth"), String(v));
});

// ---- parseCapabilitySpec / parseGrantFlag

Deno.test("capabilities: parseCapabilitySpec accepts a full spec and normalizes it", () => {
  const s = parseCapabilitySpec({
    resource: FS + "src/*",
    rights: ["read", "write", "read"],
    effect: "ask",
    uses_remaining: 2,
    expires_at: "2030-01-02T03:04:05+01:00",
    delegable: false,
  });
  assert.deepEqual(s, {
    resource: FS + "src/*",
    rights: ["read", "write"],
    effect: "ask",
    uses_remaining: 2,
    expires_at: "2030-01-02T02:04:05.000Z",
    delegable: false,
  });
});

Deno.test("capabilities: parseCapabilitySpec errors name the field", () => {
  const base = { resource: FS + "a", rights: ["read"] };
  throwsInvalid(() => parseCapabilitySpec(null), "capability");
  throwsInvalid(() => parseCapabilitySpec([base]), "capability");
  throwsInvalid(() => parseCapabilitySpec("filesystem:workspace:a"), "capability");
  throwsInvalid(() => parseCapabilitySpec({ ...base, rights: ["fly"] }), "capability.rights");
  throwsInvalid(() => parseCapabilitySpec({ ...base, rights: [] }), "capability.rights");
  throwsInvalid(() => parseCapabilitySpec({ ...base, rights: "read" }), "capability.rights");
  throwsInvalid(() => parseCapabilitySpec({ rights: ["read"] }), "capability.resource");
  throwsInvalid(() => parseCapabilitySpec({ ...base, resource: "*" }), "capability.resource");
  throwsInvalid(() => parseCapabilitySpec({ ...base, effect: "maybe" }), "capability.effect");
  throwsInvalid(
    () => parseCapabilitySpec({ ...base, uses_remaining: 0 }),
    "capability.uses_remaining",
  );
  throwsInvalid(
    () => parseCapabilitySpec({ ...base, uses_remaining: 1.5 }),
    "capability.uses_remaining",
  );
  throwsInvalid(
    () => parseCapabilitySpec({ ...base, uses_remaining: "3" }),
    "capability.uses_remaining",
  );
  throwsInvalid(
    () => parseCapabilitySpec({ ...base, expires_at: "tomorrow" }),
    "capability.expires_at",
  );
  throwsInvalid(
    () => parseCapabilitySpec({ ...base, expires_at: 1700000000 }),
    "capability.expires_at",
  );
  throwsInvalid(() => parseCapabilitySpec({ ...base, delegable: "yes" }), "capability.delegable");
  throwsInvalid(() => parseCapabilitySpec({ ...base, subject: 3 }), "capability.subject");
  throwsInvalid(() => parseCapabilitySpec({ ...base, status: "active" }), "capability.status");
  // A custom field prefix is used throughout.
  throwsInvalid(
    () => parseCapabilitySpec({ ...base, rights: ["fly"] }, "grants[1]"),
    "grants[1].rights",
  );
});

Deno.test("capabilities: parseGrantFlag parses RESOURCE=RIGHT,RIGHT", () => {
  assert.deepEqual(parseGrantFlag(FS + "src/*=read,write"), {
    resource: FS + "src/*",
    rights: ["read", "write"],
  });
  assert.deepEqual(parseGrantFlag("shell:git=execute"), {
    resource: "shell:git",
    rights: ["execute"],
  });
  // The last '=' separates, so a path may contain '='.
  assert.deepEqual(parseGrantFlag(FS + "a=b.txt=read"), {
    resource: FS + "a=b.txt",
    rights: ["read"],
  });
});

Deno.test("capabilities: parseGrantFlag refuses malformed flags naming --grant", () => {
  for (
    const bad of [
      FS + "a",
      FS + "a=",
      "=read",
      FS + "a=fly",
      FS + "a=read,,write",
      "*=read",
      FS + "../x=read",
      "nofamily=read",
    ]
  ) {
    throwsInvalid(() => parseGrantFlag(bad), "--grant");
  }
});

// ---- the same rules through the runtime

Deno.test("capabilities: capability.grant through the runtime only narrows", async () => {
  await using env = await makeEnv({ files: { "src/a.txt": "A", "other.txt": "O" } });
  const pid = await launch(env, [
    { resource: FS + "src/*", rights: ["read"], uses_remaining: 3 },
  ]);
  const store = env.rt.kernel.store;
  const parent = (await store.capabilitiesOf(pid)).find((c) => c.resource === FS + "src/*")!;
  const { pid: _p, ...base } = await env.rt.process(pid);
  const child = await store.insertProcess({ ...base, ppid: pid, lineage: [pid] });
  const grant = (args: Record<string, unknown>) =>
    env.rt.syscall(pid, "capability.grant", { cap_id: parent.cap_id, to: child.pid, ...args });
  await rejectsCode(grant({ resource: FS + "*", uses_remaining: 1 }), "EPERM");
  await rejectsCode(
    grant({ resource: FS + "src/a.txt", rights: ["write"], uses_remaining: 1 }),
    "EPERM",
  );
  await rejectsCode(grant({ resource: FS + "src/a.txt", uses_remaining: 4 }), "EPERM");
  await rejectsCode(grant({ resource: FS + "src/a.txt" }), "EPERM"); // unlimited from limited
  await rejectsCode(grant({ resource: "*", uses_remaining: 1 }), "EINVAL");
  // Nothing was handed out and no uses were reserved by the refusals.
  assert.deepEqual(
    (await store.capabilitiesOf(child.pid)).filter((c) => c.resource.startsWith(FS)),
    [],
  );
  assert.equal((await store.getCapability(parent.cap_id))?.uses_remaining, 3);
  // A legal narrowing lands, reserving its uses from the parent.
  const ok = await grant({ resource: FS + "src/a.txt", uses_remaining: 2 }) as { cap_id: string };
  const got = await store.getCapability(ok.cap_id);
  assert.equal(got?.parent_cap_id, parent.cap_id);
  assert.equal(got?.delegation_depth, 1);
  assert.equal(got?.uses_remaining, 2);
  assert.equal((await store.getCapability(parent.cap_id))?.uses_remaining, 1);
  assert.equal(await env.rt.syscall(child.pid, "filesystem.read", { path: "src/a.txt" }), "A");
  await rejectsCode(env.rt.syscall(child.pid, "filesystem.read", { path: "other.txt" }), "EPERM");
});

Deno.test("capabilities: a human always_allow answers later asks without asking again", async () => {
  const human = new ScriptedHuman(["always_allow"]);
  await using env = await makeEnv({ files: { "a.txt": "A" }, providers: { human } });
  const pid = await launch(env, [{ resource: FS + "*", rights: ["read"], effect: "ask" }]);
  assert.equal(await env.rt.syscall(pid, "filesystem.read", { path: "a.txt" }), "A");
  assert.equal(await env.rt.syscall(pid, "filesystem.read", { path: "a.txt" }), "A");
  assert.equal(human.asked.length, 1);
  const humanCap = (await env.rt.kernel.store.capabilitiesOf(pid)).find((c) =>
    c.issued_by === "human:owner"
  );
  assert.equal(humanCap?.resource, FS + "a.txt");
  assert.equal(humanCap?.delegable, false);
  // The standing answer covers only the resource it was given for.
  await Deno.writeTextFile(`${env.ws}/b.txt`, "B");
  await rejectsCode(env.rt.syscall(pid, "filesystem.read", { path: "b.txt" }), "EPERM");
  assert.equal(human.asked.length, 2);
});

Deno.test("capabilities: DENY and ASK match every spelling of a name; ALLOW matches it exactly", () => {
  const now = Date.now();
  const b = { syscall: "filesystem.read", args_hash: "h" };
  const row = (cap_id: string, resource: string, effect: "allow" | "deny" | "ask") =>
    capRecord({
      cap_id,
      resource,
      rights: ["read"],
      effect,
      created_at: new Date(now).toISOString(),
    });
  const deny = [row("d", "filesystem:workspace:Secrets/*", "deny")];
  assert.equal(decide(deny, "filesystem:workspace:secrets/key", "read", b, now).effect, "deny");
  assert.equal(
    decide(deny, "filesystem:workspace:\uff33ecrets/key", "read", b, now).effect,
    "deny",
  );
  const ask = [row("a", "filesystem:workspace:caf\u00e9.txt", "ask")];
  assert.equal(decide(ask, "filesystem:workspace:cafe\u0301.txt", "read", b, now).effect, "ask");
  // An ALLOW is never widened by folding: default deny for the other spelling.
  const allow = [row("x", "filesystem:workspace:Public/*", "allow")];
  assert.equal(decide(allow, "filesystem:workspace:Public/a", "read", b, now).effect, "allow");
  assert.equal(decide(allow, "filesystem:workspace:public/a", "read", b, now).effect, "deny");
  assert.equal(
    restrictionMatches("filesystem:workspace:src/*", "filesystem:workspace:src2/x"),
    false,
  );
});
