/**
 * The PostgreSQL store's schema as numbered migrations, applied in order at
 * open inside one transaction that holds an advisory lock (so two runtimes
 * opening a fresh database at once do not both create it). `schema_migrations`
 * records each applied version; a database newer than this code is refused.
 *
 * Layout follows the SQLite store (see `sqlite.ts`): documents as JSON text,
 * the columns a query filters on beside them. On top, for several workers:
 * lease columns on `process_state` (who holds a process, its token, until
 * when, and when it last ran), the chain head row that every audit and event
 * append locks (one hash chain and gap-free event ids in commit order,
 * whoever writes), and a NOTIFY when a process becomes runnable from outside
 * a quantum (a decision, a wake, a new process).
 * @module
 */

/** Advisory lock key taken while migrating ("libosmig"). */
export const MIGRATION_LOCK = 0x6c69626f736d6967n;

/** SQLSTATE raised by a fenced write whose lease was lost. */
export const FENCE_SQLSTATE = "LF001";

/** Channel a worker LISTENs on; the payload is the pid. */
export const RUNNABLE_CHANNEL = "libos_runnable";

const _V1 = `
CREATE TABLE meta (key text COLLATE "C" PRIMARY KEY, value text NOT NULL);
CREATE TABLE processes (pid serial PRIMARY KEY, ppid integer, body text NOT NULL);
CREATE INDEX processes_ppid ON processes (ppid);
CREATE TABLE process_state (
  pid integer PRIMARY KEY, status text NOT NULL, pending text, model text, usage text NOT NULL,
  updated_at text NOT NULL,
  lease_worker text, lease_token bigint NOT NULL DEFAULT 0, lease_until timestamptz,
  last_run timestamptz);
CREATE INDEX process_state_status ON process_state (status, pid);
-- The claim order (see PgStore.claim): never run first, newest first; then least recently run.
CREATE INDEX process_state_claim
  ON process_state (last_run NULLS FIRST, (CASE WHEN last_run IS NULL THEN -pid ELSE pid END))
  WHERE status IN ('runnable', 'running');
CREATE TABLE model_inputs (pid integer PRIMARY KEY, body text NOT NULL);
CREATE TABLE model_log (
  pid integer NOT NULL, seq integer NOT NULL, body text NOT NULL, PRIMARY KEY (pid, seq));
CREATE TABLE step_results (
  pid integer NOT NULL, step integer NOT NULL, oid text NOT NULL, PRIMARY KEY (pid, step));
CREATE TABLE capabilities (
  n bigserial, cap_id text PRIMARY KEY, subject integer NOT NULL, parent_cap_id text,
  status text NOT NULL, uses_remaining integer, body text NOT NULL);
CREATE INDEX caps_subject ON capabilities (subject, n);
CREATE INDEX caps_parent ON capabilities (parent_cap_id);
CREATE TABLE objects (
  n bigserial, oid text PRIMARY KEY, namespace text NOT NULL, name text, version integer NOT NULL,
  body text NOT NULL);
CREATE INDEX objects_ns ON objects (namespace, n);
CREATE UNIQUE INDEX objects_name ON objects (namespace, name) WHERE name IS NOT NULL;
CREATE TABLE object_versions (
  oid text NOT NULL, version integer NOT NULL, body text NOT NULL, PRIMARY KEY (oid, version));
CREATE TABLE links (
  n bigserial, from_oid text NOT NULL, to_oid text NOT NULL, relation text NOT NULL,
  PRIMARY KEY (from_oid, to_oid, relation));
CREATE TABLE mailbox (
  msg_id serial PRIMARY KEY, to_pid integer NOT NULL, kind text NOT NULL, body text NOT NULL);
CREATE INDEX mailbox_to ON mailbox (to_pid);
CREATE TABLE images (
  name text COLLATE "C" PRIMARY KEY, registered_by text NOT NULL, body text NOT NULL);
CREATE TABLE file_labels (path text COLLATE "C" PRIMARY KEY, label text NOT NULL);
CREATE TABLE audit (
  seq bigint PRIMARY KEY, record_id text NOT NULL, actor text NOT NULL, action text NOT NULL,
  decision text NOT NULL, prev_hash text NOT NULL, hash text NOT NULL, body text NOT NULL);
CREATE TABLE chain_head (
  id integer PRIMARY KEY CHECK (id = 1), audit_seq bigint NOT NULL, audit_hash text NOT NULL,
  event_seq bigint NOT NULL);
INSERT INTO chain_head VALUES (1, 0, '', 0);
CREATE TABLE events (event_id bigint PRIMARY KEY, type text NOT NULL, body text NOT NULL);
CREATE TABLE effects (
  n bigserial, effect_id text PRIMARY KEY, pid integer NOT NULL, status text NOT NULL,
  body text NOT NULL, outcome text, finished_at text);
CREATE INDEX effects_status ON effects (status, pid);
CREATE TABLE human_requests (
  n bigserial, request_id text PRIMARY KEY, pid integer NOT NULL, status text NOT NULL,
  body text NOT NULL);
CREATE INDEX human_requests_status ON human_requests (status, pid);
CREATE TABLE model_calls (
  n bigserial, call_id text PRIMARY KEY, pid integer NOT NULL, status text NOT NULL,
  body text NOT NULL);
CREATE INDEX model_calls_pid ON model_calls (pid, n);
CREATE INDEX model_calls_status ON model_calls (status);
CREATE TABLE checkpoints (
  n bigserial, checkpoint_id text PRIMARY KEY, root_pid integer NOT NULL, sha256 text NOT NULL,
  meta text NOT NULL, body text NOT NULL);
CREATE INDEX checkpoints_root ON checkpoints (root_pid, n);
CREATE TABLE model_releases (
  n bigserial, pid integer NOT NULL, sha256 text NOT NULL, endpoint text NOT NULL,
  body text NOT NULL, PRIMARY KEY (pid, sha256, endpoint));

-- The lease check of a fenced write: held by worker w with token t and not
-- expired. FOR KEY SHARE keeps a claim (FOR UPDATE) off the row until the
-- write commits, without blocking the write's own updates of the row.
CREATE FUNCTION libos_fence(p integer, w text, t bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
  IF p IS NULL THEN RETURN true; END IF;
  PERFORM 1 FROM process_state
    WHERE pid = p AND lease_worker = w AND lease_token = t AND lease_until > clock_timestamp()
    FOR KEY SHARE;
  RETURN FOUND;
END $$;

-- The same as a condition a write statement carries (WHERE ... AND libos_fenced(...)):
-- true while the lease holds; otherwise the statement, and its transaction, fail.
CREATE FUNCTION libos_fenced(p integer, w text, t bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
  IF NOT libos_fence(p, w, t) THEN
    RAISE EXCEPTION 'the lease on process % was lost', p USING ERRCODE = '${FENCE_SQLSTATE}';
  END IF;
  RETURN true;
END $$;

-- Number, chain and insert audit drafts after the chain head, which is locked
-- for the rest of the transaction: one chain whoever appends. A draft whose
-- fence (pid, worker, token; pid null: none) no longer holds is skipped;
-- the result says which landed. The body is the draft with seq and
-- record_id spliced in front, exactly as the SQLite store stores it, and the
-- hash is sha256(prev_hash || '\\n' || body), as the verifier recomputes it.
CREATE FUNCTION libos_append_audit(
  drafts text[], actors text[], actions text[], decisions text[],
  fpids integer[], fworkers text[], ftokens bigint[]) RETURNS boolean[]
LANGUAGE plpgsql AS $$
DECLARE
  s bigint; prev text; body text; h text; ok boolean[] := '{}'; n integer;
BEGIN
  SELECT audit_seq, audit_hash INTO s, prev FROM chain_head WHERE id = 1 FOR UPDATE;
  n := coalesce(array_length(drafts, 1), 0);
  FOR i IN 1..n LOOP
    IF NOT libos_fence(fpids[i], fworkers[i], ftokens[i]) THEN
      ok := ok || false;
      CONTINUE;
    END IF;
    s := s + 1;
    IF drafts[i] = '{}' THEN
      body := '{"seq":' || s || ',"record_id":"a' || s || '"}';
    ELSE
      body := '{"seq":' || s || ',"record_id":"a' || s || '",' || substr(drafts[i], 2);
    END IF;
    h := encode(sha256(convert_to(prev || E'\\n' || body, 'UTF8')), 'hex');
    INSERT INTO audit (seq, record_id, actor, action, decision, prev_hash, hash, body)
      VALUES (s, 'a' || s, actors[i], actions[i], decisions[i], prev, h, body);
    prev := h;
    ok := ok || true;
  END LOOP;
  UPDATE chain_head SET audit_seq = s, audit_hash = prev WHERE id = 1;
  RETURN ok;
END $$;

-- An event, numbered after the head (ids in commit order, no gaps), unless its
-- fence no longer holds (null then).
CREATE FUNCTION libos_append_event(t text, b text, fp integer, fw text, ft bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE id bigint;
BEGIN
  IF NOT libos_fence(fp, fw, ft) THEN RETURN NULL; END IF;
  UPDATE chain_head SET event_seq = event_seq + 1 WHERE chain_head.id = 1 RETURNING event_seq INTO id;
  INSERT INTO events (event_id, type, body) VALUES (id, t, b);
  RETURN id;
END $$;

-- Wake listening workers when a process becomes runnable from outside a
-- quantum (new, woken, resumed); a quantum's own running -> runnable is not news.
CREATE FUNCTION libos_notify_runnable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('${RUNNABLE_CHANNEL}', NEW.pid::text);
  RETURN NULL;
END $$;
CREATE TRIGGER process_state_runnable AFTER UPDATE OF status ON process_state
  FOR EACH ROW WHEN (NEW.status = 'runnable' AND OLD.status NOT IN ('runnable', 'running'))
  EXECUTE FUNCTION libos_notify_runnable();
`;

/** Every migration, in order; index + 1 is its version. Never edit a released one: add another. */
export const MIGRATIONS: readonly string[] = [_V1];
