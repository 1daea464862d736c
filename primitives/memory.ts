/**
 * memory.* primitives: typed, versioned, labelled Object Memory. Knowing an
 * oid or a name grants nothing: every access needs a capability on the object
 * (`object:<oid>`) or on its namespace (`object_namespace:<ns>`). A DENY on
 * either wins. Labels only rise: a derived object carries the highest label of
 * what it came from and of what its creator has read.
 * @module
 */
import { decide } from "../runtime/capabilities.ts";
import { invalid, LibosError } from "../runtime/errors.ts";
import { guardText, maxLabel, mayFlow, parseLabel } from "../runtime/labels.ts";
import {
  type Label,
  type MemoryObject,
  OBJECT_KINDS,
  type ObjectKind,
  type Right,
} from "../runtime/types.ts";
import { authorize } from "./authorize.ts";
import { storeBytes } from "../runtime/budgets.ts";
import { type Call, chargeStore, optInt, optStr, type Primitive, str } from "./call.ts";
import { taint } from "./filesystem.ts";

// Kinds only the runtime writes: a step's result, a validated JIT artifact.
const _RUNTIME_KINDS: readonly string[] = ["tool_result", "tool_artifact"];

/** Largest payload (canonical JSON characters) of one object. */
export const MAX_PAYLOAD_CHARS = 4 * 1024 * 1024;

function _kind(call: Call): ObjectKind {
  const v = call.args.kind;
  if (typeof v !== "string" || !(OBJECT_KINDS as readonly string[]).includes(v)) {
    throw invalid(`${call.name}.kind`, `must be one of the ${OBJECT_KINDS.length} object kinds`);
  }
  return v as ObjectKind;
}

/** The payload, as JSON would carry it, and its size in characters (what the store keeps). */
function _payload(call: Call): { payload: unknown; size: number } {
  if (!("payload" in call.args)) throw invalid(`${call.name}.payload`, "is required");
  const json = JSON.stringify(call.args.payload);
  if (json === undefined) throw invalid(`${call.name}.payload`, "must be JSON");
  if (json.length > MAX_PAYLOAD_CHARS) {
    throw invalid(`${call.name}.payload`, `larger than ${MAX_PAYLOAD_CHARS} characters`);
  }
  return { payload: JSON.parse(json), size: storeBytes(json) };
}

function _namespace(call: Call): string {
  const ns = optStr(call, "namespace", 256) ?? call.proc.namespace;
  if (!/^[A-Za-z0-9_.:-]{1,256}$/.test(ns)) throw invalid(`${call.name}.namespace`, "malformed");
  return ns;
}

/**
 * Authorize `right` on an object through either its own resource or its
 * namespace. A DENY on either wins; otherwise the object capability is tried
 * first, then the namespace's.
 */
export async function authorizeObject(call: Call, obj: MemoryObject, right: Right): Promise<void> {
  const objRes = `object:${obj.oid}`;
  const nsRes = `object_namespace:${obj.namespace}`;
  const caps = await call.k.store.capabilitiesOf(call.proc.pid);
  const now = call.k.providers.clock.now();
  const binding = { syscall: call.name, args_hash: call.argsHash };
  const onObj = decide(caps, objRes, right, binding, now);
  const onNs = decide(caps, nsRes, right, binding, now);
  // An explicit DENY on either wins, then an ASK on either (as everywhere: DENY > ASK >
  // ALLOW); then the object's own capability; then the namespace's.
  const explicitDeny = [onObj, onNs].find((d) => d.effect === "deny" && d.cap !== null) ??
    [onObj, onNs].find((d) => d.effect === "ask");
  const resource = explicitDeny
    ? (explicitDeny === onObj ? objRes : nsRes)
    : onObj.cap
    ? objRes
    : nsRes;
  await authorize(call, { resource, right, label: obj.label });
}

async function _load(call: Call, oid: string): Promise<MemoryObject> {
  const obj = await call.k.store.getObject(oid);
  // A missing oid is ENOENT and a forbidden one EPERM: an oid has 74 random bits
  // (runtime/oids.ts), so telling them apart reveals nothing a caller could guess.
  if (!obj) throw new LibosError("ENOENT", `${call.name}.oid: no object ${oid}`);
  return obj;
}

async function _find(call: Call): Promise<MemoryObject> {
  const oid = optStr(call, "oid", 256);
  if (oid !== undefined) return await _load(call, oid);
  const name = optStr(call, "name", 256);
  if (name === undefined) throw invalid(`${call.name}.oid`, "give oid, or name (and namespace)");
  const ns = _namespace(call);
  // Authorize on the namespace before revealing whether the name exists.
  call.target = `object_namespace:${ns}`;
  await authorize(call, { resource: call.target, right: "read" });
  const obj = await call.k.store.getObjectByName(ns, name);
  if (!obj) throw new LibosError("ENOENT", `${call.name}.name: no object '${name}' in ${ns}`);
  return obj;
}

function _view(obj: MemoryObject, withPayload: boolean): Record<string, unknown> {
  const { payload, ...meta } = obj;
  return withPayload ? { ...meta, payload } : meta;
}

const put: Primitive = {
  fields: ["kind", "payload", "name", "label", "namespace", "derived_from"],
  async run(call) {
    const kind = _kind(call);
    // Step results are the runtime's record of what tools returned: a process
    // must not be able to forge one (or squat on a step's name).
    if (_RUNTIME_KINDS.includes(kind)) {
      throw invalid(`${call.name}.kind`, `${kind} objects are written by the runtime only`);
    }
    const { payload, size } = _payload(call);
    const name = optStr(call, "name", 256) ?? null;
    const ns = _namespace(call);
    let label: Label = call.args.label === undefined
      ? "normal"
      : parseLabel(call.args.label, `${call.name}.label`);
    const derived = call.args.derived_from ?? [];
    if (!Array.isArray(derived) || derived.some((d) => typeof d !== "string")) {
      throw invalid(`${call.name}.derived_from`, "must be an array of oids");
    }
    call.target = `object_namespace:${ns}`;
    await authorize(call, { resource: call.target, right: "write" });
    for (const oid of derived as string[]) {
      const src = await _load(call, oid);
      await authorizeObject(call, src, "read");
      label = maxLabel(label, src.label);
    }
    // What the creator has read flows into what it writes.
    label = maxLabel(label, call.proc.taint);
    call.argsLabel = label;
    if (name !== null && await call.k.store.getObjectByName(ns, name)) {
      throw new LibosError("EEXIST", `${call.name}.name: '${name}' already exists in ${ns}`);
    }
    chargeStore(call, size);
    const obj = await call.k.insertObject({
      namespace: ns,
      kind,
      name,
      label,
      payload,
      derived_from: derived as string[],
      created_by: call.proc.pid,
    });
    call.resultLabel = label;
    await call.k.emit("object.created", `pid:${call.proc.pid}`, `object:${obj.oid}`, {
      kind,
      namespace: ns,
      label,
    }, call.correlationId);
    return { oid: obj.oid, version: 1, label };
  },
};

const get: Primitive = {
  fields: ["oid", "name", "namespace"],
  async run(call) {
    const obj = await _find(call);
    call.target = `object:${obj.oid}`;
    await authorizeObject(call, obj, "read");
    await taint(call, obj.label);
    return _view(obj, true);
  },
};

const update: Primitive = {
  fields: ["oid", "payload", "expected_version", "label"],
  async run(call) {
    const obj = await _load(call, str(call, "oid", 256));
    const { payload, size } = _payload(call);
    const expected = optInt(call, "expected_version", 1, Number.MAX_SAFE_INTEGER);
    if (expected === undefined) throw invalid(`${call.name}.expected_version`, "is required");
    call.target = `object:${obj.oid}`;
    await authorizeObject(call, obj, "write");
    if (_RUNTIME_KINDS.includes(obj.kind)) {
      throw invalid(`${call.name}.oid`, `${obj.kind} objects are written by the runtime only`);
    }
    const asked = call.args.label === undefined
      ? obj.label
      : parseLabel(call.args.label, `${call.name}.label`);
    const label = maxLabel(obj.label, asked, call.proc.taint);
    call.argsLabel = label;
    // Every version is kept: each counts.
    chargeStore(call, size);
    const next = await call.k.store.updateObject(obj.oid, expected, {
      payload,
      label,
      updated_at: call.k.now(),
    });
    if (!next) {
      const cur = await call.k.store.getObject(obj.oid);
      throw new LibosError(
        "ECONFLICT",
        `${call.name}.expected_version: object is at version ${cur?.version}, not ${expected}`,
      );
    }
    call.resultLabel = label;
    await call.k.emit("object.updated", `pid:${call.proc.pid}`, call.target, {
      version: next.version,
      label,
    }, call.correlationId);
    return { oid: obj.oid, version: next.version, label };
  },
};

const list: Primitive = {
  fields: ["namespace"],
  async run(call) {
    const ns = _namespace(call);
    call.target = `object_namespace:${ns}`;
    await authorize(call, { resource: call.target, right: "read" });
    // A name is free text its writer chose: labelled above what the caller already
    // carries, it shows as a label and a hash (reading it would not raise the taint).
    return (await call.k.store.listObjects(ns)).map((o) => {
      const v = _view(o, false);
      if (o.name !== null && !mayFlow(o.label, call.proc.taint)) {
        v.name = guardText(o.label, o.name);
      }
      return v;
    });
  },
};

const link: Primitive = {
  fields: ["from", "to", "relation"],
  async run(call) {
    const from = await _load(call, str(call, "from", 256));
    const to = await _load(call, str(call, "to", 256));
    const relation = str(call, "relation", 64);
    if (!/^[a-z][a-z0-9_]{0,63}$/.test(relation)) {
      throw invalid(`${call.name}.relation`, "must be a lowercase identifier");
    }
    call.target = `object:${from.oid}`;
    await authorizeObject(call, from, "link");
    await authorizeObject(call, to, "read");
    await call.k.store.insertLink({ from_oid: from.oid, to_oid: to.oid, relation });
    await call.k.emit("object.linked", `pid:${call.proc.pid}`, call.target, {
      to: to.oid,
      relation,
    }, call.correlationId);
    return { from: from.oid, to: to.oid, relation };
  },
};

const links: Primitive = {
  fields: ["oid"],
  async run(call) {
    const obj = await _load(call, str(call, "oid", 256));
    call.target = `object:${obj.oid}`;
    await authorizeObject(call, obj, "read");
    return await call.k.store.linksFrom(obj.oid);
  },
};

/** The memory family. */
export const MEMORY: Record<string, Primitive> = {
  "memory.put": put,
  "memory.get": get,
  "memory.update": update,
  "memory.list": list,
  "memory.link": link,
  "memory.links": links,
};
