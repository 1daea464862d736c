/**
 * The worker loop: runs processes from a store that several runtimes share
 * (PostgreSQL), on one machine or many.
 *
 * A worker claims runnable processes with leases (`FOR UPDATE SKIP LOCKED`,
 * least recently run first, after those never run, newest first: round-robin
 * across the whole fleet, newcomers served next), gives each
 * one quantum through a kernel whose store is fenced by that lease, and
 * releases it, stamping its last run. While it holds leases it renews them
 * every third of their length; a worker that dies (or stalls past its lease)
 * loses them, and whichever worker claims such a process next recovers it
 * first: effects and model calls left pending become `unknown` (never
 * replayed) and a step caught mid-flight gets "outcome unknown" (EIO) as its
 * result. A worker that lost a lease writes nothing more for that process:
 * every write is refused (`EFENCED`), so it cannot commit anything for a
 * process another worker now runs. It also stops the process's effect under
 * way (a shell command, a JIT tool) as soon as it finds the lease lost or
 * cannot renew it in time; and a worker that stalled instead cannot leave
 * one running behind a takeover: the next holder waits for the effect's hard
 * deadline (`ends_by`, held by the sandbox itself) before it recovers anything.
 *
 * Idle workers wait for a `NOTIFY` (a decision, a wake, a new process) and
 * poll as a fallback.
 * @module
 */
import { LibosError, toLibosError } from "../runtime/errors.ts";
import type { Kernel } from "../runtime/kernel.ts";
import type { Claim, Fence, LeaseStore } from "../runtime/store/store.ts";
import type { QuantumDriver, RunReport, Scheduler } from "./scheduler.ts";
import { recoverProcess } from "./recovery.ts";

/** A lease not renewed for this long belongs to a worker that died (ms). */
export const WORKER_LEASE_MS = 15_000;

/** Longest an idle worker waits before looking for work again without a NOTIFY (ms). */
export const WORKER_POLL_MS = 1_000;

/** How often an idle worker wakes processes whose human request expired (ms). */
const _EXPIRY_SWEEP_MS = 5_000;

/** Options of a {@link WorkerLoop}. */
export interface WorkerOptions {
  /** This worker's id in leases (default: host, OS pid and a random suffix). */
  id?: string;
  /** Lease length in ms (default {@link WORKER_LEASE_MS}). Renewed every third of it. */
  leaseMs?: number;
  /** Idle poll in ms (default {@link WORKER_POLL_MS}). */
  pollMs?: number;
  /** Called when a quantum starts (benchmarks record when each process ran). */
  onQuantum?: (pid: number) => void;
}

/** What a worker did. */
export interface WorkerStats {
  /** Quanta started. */
  quanta: number;
  /** Processes recovered from a worker whose lease expired. */
  takenOver: number;
  /** Quanta cut short because this worker's lease was lost (nothing written after). */
  lost: number;
  /**
   * Takeovers put off because an effect the last holder started could still
   * be under way (that worker may have stalled, not died): the process is
   * held until the effect has surely ended, then recovered.
   */
  deferred: number;
}

/** Options of {@link WorkerLoop.run}. */
export interface RunOptions {
  /** Stop once nothing is runnable or running anywhere in the store. */
  untilIdle?: boolean;
  /** Stop after starting this many quanta. */
  maxQuanta?: number;
  /** Stop (after the quanta in flight) when aborted. */
  signal?: AbortSignal;
}

/** A worker id: where it runs, and unique among workers. */
export function workerId(): string {
  let host = "host";
  try {
    host = Deno.hostname();
  } catch { /* no sys permission */ }
  return `${host}:${Deno.pid}:${crypto.randomUUID().slice(0, 8)}`;
}

/** Claims processes with leases and runs their quanta through fenced kernels. */
export class WorkerLoop implements QuantumDriver {
  /** This worker's id in leases. */
  readonly id: string;
  /** What it did so far. */
  readonly stats: WorkerStats = { quanta: 0, takenOver: 0, lost: 0, deferred: 0 };
  #k: Kernel;
  #sched: Scheduler;
  #leases: LeaseStore;
  #leaseMs: number;
  #pollMs: number;
  #onQuantum: ((pid: number) => void) | null;
  #held = new Map<number, Fence>();
  /** Per held process: the timer that stops its effects if its lease is not renewed in time. */
  #watch = new Map<number, number>();
  #renewTimer: number | null = null;
  #renewing = false;
  #unlisten: (() => Promise<void>) | null = null;
  #listening: Promise<void> | null = null;
  #poke: (() => void) | null = null;
  #woken = false;
  #lastSweep = 0;
  #closing = new AbortController();
  #runs = new Set<Promise<unknown>>();

  /** A worker over `kernel`'s store (which must have leases), running quanta with `scheduler`. */
  constructor(kernel: Kernel, scheduler: Scheduler, options: WorkerOptions = {}) {
    const leases = kernel.store.leases;
    if (!leases) {
      throw new LibosError(
        "EINVAL",
        "store: workers need a PostgreSQL store; a SQLite store has one scheduler (libos resume or serve)",
      );
    }
    this.#k = kernel;
    this.#sched = scheduler;
    this.#leases = leases;
    this.id = options.id ?? workerId();
    this.#leaseMs = options.leaseMs ?? WORKER_LEASE_MS;
    if (!Number.isInteger(this.#leaseMs) || this.#leaseMs < 100) {
      throw new LibosError("EINVAL", "leaseMs: must be an integer of at least 100");
    }
    this.#pollMs = options.pollMs ?? WORKER_POLL_MS;
    this.#onQuantum = options.onQuantum ?? null;
  }

  /** Run until nothing is runnable or running in the store (or `maxQuanta` were started). */
  async runUntilIdle(maxQuanta = Number.MAX_SAFE_INTEGER): Promise<RunReport> {
    return await this.run({ untilIdle: true, maxQuanta });
  }

  /**
   * Recover now what runtimes that stopped left behind (processes caught
   * mid-step or whose lease ran out; never one a live worker holds), without
   * running them: a worker does it when it starts, as a SQLite store's
   * scheduler does at open. Returns how many.
   */
  async recoverAbandoned(): Promise<number> {
    let n = 0;
    for (;;) {
      const claims = await this.#leases.claim(this.id, 16, this.#leaseMs, { abandoned: true });
      if (claims.length === 0) return n;
      for (const c of claims) {
        const fence: Fence = { pid: c.pid, worker: c.worker, token: c.token };
        this.#k.bindStore(c.pid, this.#leases.fenced(fence));
        let deferred = false;
        try {
          deferred = await this.#recover(fence);
          if (!deferred) {
            this.stats.takenOver++;
            n++;
          }
        } catch (e) {
          if (toLibosError(e).code !== "EFENCED") throw e;
        } finally {
          this.#k.unbindStore(c.pid);
          this.#k.forget(c.pid);
          if (!deferred) await this.#leases.release([fence], false).catch(() => {});
        }
      }
    }
  }

  /** Claim `pid` and give it one quantum, if it is runnable and nobody holds it. */
  async quantum(pid: number): Promise<void> {
    const sent = performance.now();
    const [claim] = await this.#leases.claim(this.id, 1, this.#leaseMs, { pid });
    if (claim) await this.#serve(claim, sent);
  }

  /**
   * Claim and run quanta, up to the scheduler's concurrency at once, until
   * `signal` aborts, `maxQuanta` were started or (with `untilIdle`) the store
   * has nothing runnable or running left. Quanta in flight always finish.
   */
  async run(options: RunOptions = {}): Promise<RunReport> {
    const run = this.#run(options);
    this.#runs.add(run);
    try {
      return await run;
    } finally {
      this.#runs.delete(run);
    }
  }

  async #run(options: RunOptions): Promise<RunReport> {
    // A closed worker claims nothing (a late kick from a host finds it so).
    if (this.#closing.signal.aborted) return { quanta: 0, idle: false };
    const closing = this.#closing.signal;
    const maxQuanta = options.maxQuanta ?? Number.MAX_SAFE_INTEGER;
    const slots = this.#sched.concurrency;
    const active = new Map<number, Promise<void>>();
    // A quantum that failed for a reason other than its lost lease (the store went
    // away, say) ends the run: claimed work stays leased until it expires elsewhere.
    const failures: unknown[] = [];
    let quanta = 0;
    let freed!: Promise<void>;
    let free!: () => void;
    const rearm = () => (freed = new Promise<void>((r) => (free = r)));
    rearm();
    const stop = () => this.#wake();
    options.signal?.addEventListener("abort", stop);
    closing.addEventListener("abort", stop);
    // Listening before the first claim: news that arrives between a claim that
    // found nothing and the wait that follows it is not lost.
    await this.#listen();
    try {
      for (;;) {
        if (failures.length) throw failures[0];
        if (options.signal?.aborted || closing.aborted) break;
        this.#woken = false;
        // Requests that expired undecided count as denied: wake their processes now and then.
        if (Date.now() - this.#lastSweep >= _EXPIRY_SWEEP_MS) await this.#sweepExpired();
        let claims: Claim[] = [];
        const room = Math.min(slots - active.size, maxQuanta - quanta);
        const sent = performance.now();
        if (room > 0) claims = await this.#leases.claim(this.id, room, this.#leaseMs);
        for (const c of claims) {
          quanta++;
          active.set(
            c.pid,
            this.#serve(c, sent).catch((error) => void failures.push(error)).finally(() => {
              active.delete(c.pid);
              free();
            }),
          );
        }
        if (active.size > 0) {
          // Full, or nothing more to claim now: wait for a quantum to end (or new work).
          if (active.size >= slots || quanta >= maxQuanta) await freed;
          else await Promise.race([freed, this.#idleWait(this.#pollMs)]);
          rearm();
          continue;
        }
        if (quanta >= maxQuanta) return { quanta, idle: false };
        // Nothing to claim: first wake what expired, then see whether anything is left.
        await this.#sweepExpired();
        const act = await this.#leases.activity();
        if (options.untilIdle && act.runnable === 0 && act.running === 0) {
          return { quanta, idle: true };
        }
        // Woken just now (an expired request), or freed since the claim: claim it.
        if (act.claimable > 0) continue;
        // Something is held elsewhere (or nothing at all): wait for news, a
        // lease to expire, or the poll.
        const expiry = act.nextExpiryMs === null ? Infinity : act.nextExpiryMs + 5;
        await this.#idleWait(Math.min(this.#pollMs, expiry));
      }
      if (failures.length) throw failures[0];
      return { quanta, idle: false };
    } finally {
      options.signal?.removeEventListener("abort", stop);
      closing.removeEventListener("abort", stop);
      await Promise.allSettled(active.values());
    }
  }

  /**
   * Stop: runs in progress claim nothing more and end once their quanta in
   * flight have; then stop listening for NOTIFYs and renewing.
   */
  async close(): Promise<void> {
    this.#closing.abort();
    this.#wake();
    await Promise.allSettled([...this.#runs]);
    this.#stopRenewal();
    const un = this.#unlisten;
    this.#unlisten = null;
    this.#listening = null;
    if (un) await un();
  }

  // One claimed process (claimed by a statement sent at `sent`): recover it if
  // its last holder died, run one quantum through a kernel fenced by the lease,
  // and give it back.
  async #serve(claim: Claim, sent: number): Promise<void> {
    const fence: Fence = {
      pid: claim.pid,
      worker: claim.worker,
      token: claim.token,
      leaseMs: this.#leaseMs,
    };
    const k = this.#k;
    // Held at a quiescent point by this runtime (a checkpoint): give it back untouched.
    if (k.isFrozen(fence.pid) || k.inQuantum(fence.pid)) {
      await this.#leases.release([fence], false).catch(() => {});
      return;
    }
    this.#held.set(fence.pid, fence);
    k.bindStore(fence.pid, this.#leases.fenced(fence));
    this.#watchLease(fence.pid, sent);
    this.#startRenewal();
    k.enterQuantum(fence.pid);
    let ran = false;
    let deferred = false;
    try {
      if (claim.takenOver) {
        deferred = await this.#recover(fence);
        if (deferred) return;
        this.stats.takenOver++;
      }
      this.stats.quanta++;
      ran = true;
      this.#onQuantum?.(fence.pid);
      await this.#sched.runQuantum(fence.pid);
    } catch (e) {
      const err = toLibosError(e);
      if (err.code !== "EFENCED") throw err;
      this.stats.lost++;
    } finally {
      k.leaveQuantum(fence.pid);
      k.unbindStore(fence.pid);
      k.forget(fence.pid);
      this.#held.delete(fence.pid);
      clearTimeout(this.#watch.get(fence.pid));
      this.#watch.delete(fence.pid);
      if (this.#held.size === 0) this.#stopRenewal();
      // A lost lease releases nothing (the token no longer matches); a deferred
      // takeover keeps its lease until the effect it waits for has ended.
      if (!deferred) await this.#leases.release([fence], ran).catch(() => {});
    }
  }

  // The worker that held this process died or stalled: what it left pending
  // becomes unknown (never replayed; a human is asked about its effects), and
  // a step caught mid-flight waits for those answers or gets "outcome unknown".
  // While an effect it started may still be under way, nothing is done: the
  // lease is stretched to when that effect has surely ended (whoever claims the
  // process then recovers it), and this says true.
  async #recover(fence: Fence): Promise<boolean> {
    const wait = await recoverProcess(this.#k.forPid(fence.pid), this.#sched, fence.pid);
    if (wait <= 0) return false;
    const { renewed } = await this.#leases.renew([fence], wait);
    if (renewed.length === 0) {
      throw new LibosError("EFENCED", `the lease on process ${fence.pid} was lost`);
    }
    this.stats.deferred++;
    return true;
  }

  // Stop `pid`'s effects under way unless its lease (set by a statement sent at
  // `sent`) is renewed before a sixth of it is left: by then another worker may
  // be about to take the process over. (An effect starts only with a third left.)
  #watchLease(pid: number, sent: number): void {
    clearTimeout(this.#watch.get(pid));
    const at = sent + this.#leaseMs - this.#leaseMs / 6 - performance.now();
    this.#watch.set(
      pid,
      setTimeout(
        () => this.#stopEffects(pid, "could not be renewed in time"),
        Math.max(0, at),
      ) as unknown as number,
    );
  }

  #stopEffects(pid: number, why: string): void {
    this.#k.abortEffects(
      pid,
      new LibosError(
        "EFENCED",
        `worker ${this.id}: the lease on process ${pid} ${why}: its effect under way was stopped`,
      ),
    );
  }

  #startRenewal(): void {
    if (this.#renewTimer !== null) return;
    this.#renewTimer = setInterval(
      () => this.#renew(),
      Math.max(50, Math.floor(this.#leaseMs / 3)),
    ) as unknown as number;
  }

  // One renewal statement at a time. A lost lease stops the process's effects at
  // once (the next write for it is refused anyway); one whose row was locked is
  // tried again shortly, not a third of a lease later.
  #renew(): void {
    if (this.#renewing || this.#held.size === 0) return;
    const fences = [...this.#held.values()];
    const sent = performance.now();
    this.#renewing = true;
    this.#leases.renew(fences, this.#leaseMs).then(({ renewed, lost }) => {
      for (const f of renewed) {
        if (this.#held.get(f.pid)?.token === f.token) this.#watchLease(f.pid, sent);
      }
      for (const f of lost) {
        if (this.#held.get(f.pid)?.token === f.token) this.#stopEffects(f.pid, "was lost");
      }
      if (renewed.length + lost.length < fences.length && this.#renewTimer !== null) {
        setTimeout(() => this.#renew(), 50);
      }
    }).catch(() => {}).finally(() => {
      this.#renewing = false;
    });
  }

  #stopRenewal(): void {
    if (this.#renewTimer === null) return;
    clearInterval(this.#renewTimer);
    this.#renewTimer = null;
  }

  async #sweepExpired(): Promise<void> {
    this.#lastSweep = Date.now();
    await this.#sched.wakeExpired();
  }

  // News (a NOTIFY, a stop): end the wait in progress, or the next one at once.
  #wake(): void {
    this.#woken = true;
    this.#poke?.();
  }

  // Wait up to `ms`, or until a NOTIFY says a process became runnable (or one
  // already did since the last claim).
  async #idleWait(ms: number): Promise<void> {
    if (this.#woken) return;
    let timer: number | undefined;
    await new Promise<void>((resolve) => {
      this.#poke = resolve;
      timer = setTimeout(resolve, ms) as unknown as number;
    });
    clearTimeout(timer);
    this.#poke = null;
  }

  #listen(): Promise<void> {
    this.#listening ??= this.#leases.onRunnable(() => this.#wake()).then((un) => {
      this.#unlisten = un;
    }).catch(() => {/* polling still finds the work */});
    return this.#listening;
  }
}
