/**
 * Open a store from what a user typed: a `postgres://` (or `postgresql://`)
 * URL opens the PostgreSQL store (its driver is loaded only then), anything
 * else is a SQLite file path (or `:memory:`).
 * @module
 */
import { SqliteStore } from "./sqlite.ts";
import type { Store } from "./store.ts";
import { isPostgresUrl, redactUrl } from "./_pg_url.ts";

export { isPostgresUrl, redactUrl };

/** Open the store `spec` names: a PostgreSQL URL or a SQLite path. */
export async function openStore(spec: string): Promise<Store> {
  if (isPostgresUrl(spec)) {
    const { PgStore } = await import("./postgres.ts");
    return await PgStore.open(spec);
  }
  return SqliteStore.open(spec);
}
