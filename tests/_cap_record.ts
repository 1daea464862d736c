/**
 * A stored capability row for tests, in a module that imports nothing but
 * types, so that fixtures started as another OS user (with an empty
 * DENO_DIR) can use it as the test helpers do.
 * @module
 */
import type { Capability } from "../runtime/types.ts";

/**
 * A stored capability row: a live, delegable, host-issued ALLOW for pid 1 with
 * no expiry or use limit; `fields` names it and sets anything else.
 */
export function capRecord(
  fields: Pick<Capability, "cap_id" | "resource" | "rights" | "created_at"> & Partial<Capability>,
): Capability {
  return {
    subject: 1,
    constraints: {},
    issued_by: "host",
    expires_at: null,
    delegable: true,
    revocable: true,
    effect: "allow",
    parent_cap_id: null,
    delegation_depth: 0,
    uses_remaining: null,
    status: "active",
    ...fields,
  };
}
