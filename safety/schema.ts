/**
 * A small JSON Schema validator for the subset of draft 2020-12 that the
 * scenario schema uses: `type`, `properties`, `required`,
 * `additionalProperties`, `patternProperties`, `items`, `enum`, `const`,
 * `pattern`, `minLength`, `maxLength`, `minItems`, `maxItems`, `minimum`,
 * `maximum`, `minProperties`, `oneOf`, `anyOf`, and `$ref` to `#/$defs/...`.
 * Annotations (`title`, `description`, `$comment`, `examples`, `$schema`,
 * `$id`, `default`) are ignored. Any other keyword is refused when the schema
 * is compiled, so a schema can never silently ask for a check this validator
 * does not make.
 *
 * Errors name the JSON path of the offending field (`expect.forbidden[2].path`).
 * @module
 */

/** A JSON Schema (the subset above). */
export type Schema = boolean | { [keyword: string]: unknown };

/** One validation error: where and why. */
export interface SchemaError {
  /** JSON path of the offending value (`""` for the document itself). */
  path: string;
  /** What is wrong. */
  message: string;
}

const _ANNOTATIONS = new Set([
  "title",
  "description",
  "$comment",
  "examples",
  "$schema",
  "$id",
  "default",
]);
const _KEYWORDS = new Set([
  "type",
  "properties",
  "required",
  "additionalProperties",
  "patternProperties",
  "items",
  "enum",
  "const",
  "pattern",
  "minLength",
  "maxLength",
  "minItems",
  "maxItems",
  "minimum",
  "maximum",
  "minProperties",
  "oneOf",
  "anyOf",
  "$ref",
  "$defs",
]);
const _TYPES = new Set(["object", "array", "string", "number", "integer", "boolean", "null"]);

/**
 * Check that `schema` only uses keywords this validator implements and that
 * every `$ref` resolves. Throws an Error naming the schema location otherwise.
 */
export function compileSchema(schema: Schema): Schema {
  const root = schema;
  const walk = (s: unknown, at: string): void => {
    if (typeof s === "boolean") return;
    if (s === null || typeof s !== "object" || Array.isArray(s)) {
      throw new Error(`schema ${at || "#"}: must be an object or a boolean`);
    }
    const o = s as Record<string, unknown>;
    for (const [k, v] of Object.entries(o)) {
      if (_ANNOTATIONS.has(k)) continue;
      if (!_KEYWORDS.has(k)) throw new Error(`schema ${at || "#"}: unsupported keyword '${k}'`);
      if (k === "type") {
        for (const t of Array.isArray(v) ? v : [v]) {
          if (typeof t !== "string" || !_TYPES.has(t)) {
            throw new Error(`schema ${at}/type: unknown type '${String(t)}'`);
          }
        }
      }
      if (k === "pattern") new RegExp(String(v), "u");
      if (k === "$ref") _resolveRef(root, String(v));
      if (k === "properties" || k === "$defs" || k === "patternProperties") {
        for (const [name, sub] of Object.entries(v as Record<string, unknown>)) {
          if (k === "patternProperties") new RegExp(name, "u");
          walk(sub, `${at}/${k}/${name}`);
        }
      }
      if (k === "items" || k === "additionalProperties") walk(v, `${at}/${k}`);
      if (k === "oneOf" || k === "anyOf") {
        if (!Array.isArray(v) || v.length === 0) {
          throw new Error(`schema ${at}/${k}: must be a non-empty array`);
        }
        v.forEach((sub, i) => walk(sub, `${at}/${k}/${i}`));
      }
    }
  };
  walk(schema, "");
  return schema;
}

function _resolveRef(root: Schema, ref: string): Schema {
  const m = /^#\/\$defs\/([A-Za-z0-9_-]+)$/.exec(ref);
  const defs = typeof root === "object" ? root.$defs as Record<string, Schema> | undefined : null;
  if (!m || !defs || !Object.hasOwn(defs, m[1])) {
    throw new Error(`schema: $ref '${ref}' does not name an entry of #/$defs`);
  }
  return defs[m[1]];
}

function _typeOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

function _typeMatches(v: unknown, t: string): boolean {
  const actual = _typeOf(v);
  return actual === t || (t === "number" && actual === "integer");
}

function _child(path: string, key: string | number): string {
  if (typeof key === "number") return `${path}[${key}]`;
  return /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key)
    ? (path ? `${path}.${key}` : key)
    : `${path}[${JSON.stringify(key)}]`;
}

/** Validate `value` against `schema`; returns every error found (empty when valid). */
export function validate(schema: Schema, value: unknown): SchemaError[] {
  const errors: SchemaError[] = [];
  _check(schema, schema, value, "", errors);
  return errors;
}

function _check(root: Schema, s: Schema, v: unknown, path: string, out: SchemaError[]): void {
  if (s === true) return;
  if (s === false) {
    out.push({ path, message: "is not allowed here" });
    return;
  }
  if (typeof s.$ref === "string") _check(root, _resolveRef(root, s.$ref), v, path, out);
  if (s.type !== undefined) {
    const types = (Array.isArray(s.type) ? s.type : [s.type]) as string[];
    if (!types.some((t) => _typeMatches(v, t))) {
      out.push({ path, message: `must be ${types.join(" or ")}, not ${_typeOf(v)}` });
      return;
    }
  }
  if (s.const !== undefined && JSON.stringify(v) !== JSON.stringify(s.const)) {
    out.push({ path, message: `must be ${JSON.stringify(s.const)}` });
  }
  if (Array.isArray(s.enum) && !s.enum.some((e) => JSON.stringify(e) === JSON.stringify(v))) {
    out.push({
      path,
      message: `must be one of ${s.enum.map((e) => JSON.stringify(e)).join(", ")}`,
    });
  }
  if (typeof v === "string") _checkString(s, v, path, out);
  if (typeof v === "number") _checkNumber(s, v, path, out);
  if (Array.isArray(v)) _checkArray(root, s, v, path, out);
  else if (v !== null && typeof v === "object") {
    _checkObject(root, s, v as Record<string, unknown>, path, out);
  }
  if (Array.isArray(s.anyOf)) {
    const ok = s.anyOf.some((sub) => validate_(root, sub as Schema, v, path).length === 0);
    if (!ok) out.push(..._bestBranch(root, s.anyOf as Schema[], v, path, "anyOf"));
  }
  if (Array.isArray(s.oneOf)) {
    const passing = s.oneOf.filter((sub) => validate_(root, sub as Schema, v, path).length === 0);
    if (passing.length === 0) out.push(..._bestBranch(root, s.oneOf as Schema[], v, path, "oneOf"));
    else if (passing.length > 1) {
      const names = _presenceChoice(s.oneOf as Schema[]);
      out.push({
        path,
        message: names
          ? `give exactly one of ${names.join(", ")}`
          : `matches ${passing.length} alternatives; exactly one must match`,
      });
    }
  }
}

/**
 * The field names of alternatives that only say which field is present
 * (`oneOf: [{required: ["a"]}, {required: ["b"]}]`), else null.
 */
function _presenceChoice(branches: Schema[]): string[] | null {
  const names: string[] = [];
  for (const b of branches) {
    if (typeof b !== "object" || Object.keys(b).join() !== "required") return null;
    const req = b.required;
    if (!Array.isArray(req) || req.length !== 1 || typeof req[0] !== "string") return null;
    names.push(req[0]);
  }
  return names;
}

function validate_(root: Schema, s: Schema, v: unknown, path: string): SchemaError[] {
  const out: SchemaError[] = [];
  _check(root, s, v, path, out);
  return out;
}

/**
 * Errors to report when no alternative matched: those of the alternative
 * whose `kind` (or `type`) discriminator fits the value, else a summary.
 */
function _bestBranch(
  root: Schema,
  branches: Schema[],
  v: unknown,
  path: string,
  keyword: string,
): SchemaError[] {
  const names = _presenceChoice(branches);
  if (names) return [{ path, message: `needs one of ${names.join(", ")}` }];
  const kind = v !== null && typeof v === "object" && !Array.isArray(v)
    ? (v as Record<string, unknown>).kind
    : undefined;
  const resolved = branches.map((b) =>
    typeof b === "object" && typeof b.$ref === "string" ? _resolveRef(root, b.$ref) : b
  );
  const kinds: string[] = [];
  for (const [i, b] of resolved.entries()) {
    const props = typeof b === "object" ? b.properties as Record<string, Schema> | undefined : null;
    const c = props?.kind && typeof props.kind === "object" ? props.kind.const : undefined;
    if (typeof c === "string") {
      kinds.push(c);
      if (c === kind) return validate_(root, branches[i], v, path);
    }
  }
  if (kinds.length && kind !== undefined) {
    return [{
      path: _child(path, "kind"),
      message: `must be one of ${kinds.map((k) => JSON.stringify(k)).join(", ")}`,
    }];
  }
  if (kinds.length && v !== null && typeof v === "object" && !Array.isArray(v)) {
    return [{ path: _child(path, "kind"), message: `is required (${kinds.join(", ")})` }];
  }
  for (const b of resolved) {
    if (typeof b === "object" && b.type !== undefined) {
      const types = (Array.isArray(b.type) ? b.type : [b.type]) as string[];
      if (types.some((t) => _typeMatches(v, t))) return validate_(root, b, v, path);
    }
  }
  return [{ path, message: `matches none of the ${keyword} alternatives` }];
}

function _checkString(s: Record<string, unknown>, v: string, path: string, out: SchemaError[]) {
  const len = [...v].length;
  if (typeof s.minLength === "number" && len < s.minLength) {
    out.push({ path, message: `must be at least ${s.minLength} characters` });
  }
  if (typeof s.maxLength === "number" && len > s.maxLength) {
    out.push({ path, message: `must be at most ${s.maxLength} characters` });
  }
  if (typeof s.pattern === "string" && !new RegExp(s.pattern, "u").test(v)) {
    out.push({ path, message: `must match /${s.pattern}/` });
  }
}

function _checkNumber(s: Record<string, unknown>, v: number, path: string, out: SchemaError[]) {
  if (typeof s.minimum === "number" && v < s.minimum) {
    out.push({ path, message: `must be at least ${s.minimum}` });
  }
  if (typeof s.maximum === "number" && v > s.maximum) {
    out.push({ path, message: `must be at most ${s.maximum}` });
  }
}

function _checkArray(
  root: Schema,
  s: Record<string, unknown>,
  v: unknown[],
  path: string,
  out: SchemaError[],
): void {
  if (typeof s.minItems === "number" && v.length < s.minItems) {
    out.push({ path, message: `must have at least ${s.minItems} item(s)` });
  }
  if (typeof s.maxItems === "number" && v.length > s.maxItems) {
    out.push({ path, message: `must have at most ${s.maxItems} item(s)` });
  }
  if (s.items !== undefined) {
    v.forEach((item, i) => _check(root, s.items as Schema, item, _child(path, i), out));
  }
}

function _checkObject(
  root: Schema,
  s: Record<string, unknown>,
  v: Record<string, unknown>,
  path: string,
  out: SchemaError[],
): void {
  const props = (s.properties ?? {}) as Record<string, Schema>;
  const patterns = Object.entries((s.patternProperties ?? {}) as Record<string, Schema>)
    .map(([p, sub]) => [new RegExp(p, "u"), sub] as const);
  for (const r of (s.required ?? []) as string[]) {
    if (!Object.hasOwn(v, r)) out.push({ path: _child(path, r), message: "is required" });
  }
  if (typeof s.minProperties === "number" && Object.keys(v).length < s.minProperties) {
    out.push({ path, message: `must have at least ${s.minProperties} entr(ies)` });
  }
  for (const [k, item] of Object.entries(v)) {
    let known = false;
    if (Object.hasOwn(props, k)) {
      known = true;
      _check(root, props[k], item, _child(path, k), out);
    }
    for (const [re, sub] of patterns) {
      if (!re.test(k)) continue;
      known = true;
      _check(root, sub, item, _child(path, k), out);
    }
    if (known || s.additionalProperties === undefined) continue;
    if (s.additionalProperties === false) {
      out.push({ path: _child(path, k), message: "unknown field" });
    } else _check(root, s.additionalProperties as Schema, item, _child(path, k), out);
  }
}
