/**
 * Canonical JSON, hashing and bounded previews.
 *
 * Approvals bind to a hash of canonical arguments, and audit records store a
 * bounded preview plus hash and size instead of raw payloads.
 * @module
 */
import { Buffer } from "node:buffer";
import { hash } from "node:crypto";

/** JSON with object keys sorted at every depth, so equal values hash equally. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(_sortKeys(value));
}

function _sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(_sortKeys);
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[key];
      if (v !== undefined) out[key] = _sortKeys(v);
    }
    return out;
  }
  return value;
}

/** Hex sha256 of a string or bytes. */
export function sha256(data: string | Uint8Array): string {
  // One-shot: ~17% cheaper than createHash().update().digest() (measured here),
  // and audit appends and verification hash every record.
  return hash("sha256", data, "hex");
}

/** Hex sha256 of the canonical JSON of a value. */
export function hashValue(value: unknown): string {
  return sha256(canonicalJson(value));
}

/** What audit and events keep of a payload: never the raw bytes beyond the preview. */
export interface PayloadRef {
  /** sha256 of the canonical JSON. */
  sha256: string;
  /** Size in bytes of the canonical JSON. */
  size: number;
  /** At most {@link PREVIEW_CHARS} characters, or a redaction marker. */
  preview: string;
}

/** Longest preview kept in audit and events. */
export const PREVIEW_CHARS = 96;

/**
 * Bounded reference to a payload. When `redact` is set (the data carries a label
 * above `normal`) the preview names the label instead of showing content.
 */
export function payloadRef(value: unknown, redact?: string): PayloadRef {
  const json = value === undefined ? "null" : canonicalJson(value);
  const preview = redact
    ? `[redacted:${redact}]`
    : json.length > PREVIEW_CHARS
    ? json.slice(0, PREVIEW_CHARS) + "…"
    : json;
  return { sha256: sha256(json), size: Buffer.byteLength(json, "utf8"), preview };
}
