/**
 * Data labels: public < normal < confidential < restricted < secret.
 * Labels follow data (a derived object carries the highest label it came from)
 * and gate where it may flow (never to a sink with a lower label).
 * @module
 */
import { payloadRef, sha256 } from "./canonical.ts";
import { invalid } from "./errors.ts";
import { type Label, LABELS, type MemoryObject } from "./types.ts";

/** Numeric rank of a label. */
export function labelRank(label: Label): number {
  return LABELS.indexOf(label);
}

/** The higher of labels. */
export function maxLabel(...labels: Label[]): Label {
  let best: Label = "public";
  for (const l of labels) if (labelRank(l) > labelRank(best)) best = l;
  return best;
}

/** May data labelled `data` flow into a sink labelled `sink`? */
export function mayFlow(data: Label, sink: Label): boolean {
  return labelRank(data) <= labelRank(sink);
}

/** Validate a label. */
export function parseLabel(value: unknown, field = "label"): Label {
  if (typeof value !== "string" || !(LABELS as readonly string[]).includes(value)) {
    throw invalid(field, `must be one of ${LABELS.join(", ")}`);
  }
  return value as Label;
}

/**
 * Text that may carry data labelled `label` (a target or message built from a
 * tainted caller's arguments): above `normal` only the label and a hash remain.
 */
export function guardText(label: Label, text: string): string {
  return redactionFor(label) ? `[redacted:${label}] sha256:${sha256(text).slice(0, 16)}` : text;
}

/** Labels above `normal` are never previewed in audit or events. */
export function redactionFor(label: Label): string | undefined {
  return labelRank(label) > labelRank("normal") ? label : undefined;
}

/**
 * What a host listing shows of an object (the CLI's `objects`, the console's
 * API): its metadata, the name only as its label lets it out, the payload's
 * hash and size, and with `preview` a bounded preview of a payload up to
 * `normal` (never above).
 */
export function objectMetadata(o: MemoryObject, preview: boolean): Record<string, unknown> {
  const ref = payloadRef(o.payload, preview ? redactionFor(o.label) : "meta");
  return {
    oid: o.oid,
    namespace: o.namespace,
    kind: o.kind,
    name: o.name === null ? null : guardText(o.label, o.name),
    version: o.version,
    label: o.label,
    sha256: ref.sha256,
    size: ref.size,
    ...(preview ? { preview: ref.preview } : {}),
    derived_from: o.derived_from,
    created_by: o.created_by,
    created_at: o.created_at,
    updated_at: o.updated_at,
  };
}
