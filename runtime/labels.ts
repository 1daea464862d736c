/**
 * Data labels: public < normal < confidential < restricted < secret.
 * Labels follow data (a derived object carries the highest label it came from)
 * and gate where it may flow (never to a sink with a lower label).
 * @module
 */
import { sha256 } from "./canonical.ts";
import { invalid } from "./errors.ts";
import { type Label, LABELS } from "./types.ts";

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
