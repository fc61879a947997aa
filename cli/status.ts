/**
 * `nixfleet status --stack <name>`: where each host of a stack stands, from its own
 * `<stateDir>/status.json` (docs/rollout.md section 4), read over SSH with the OpenSSH client.
 *
 * - Hosts come from the same path as `nixfleet render` (readStackFile + fleetFromConfigMap).
 * - Every host is read in parallel (at most PARALLEL ssh clients at once), each bounded twice:
 *   ssh's ConnectTimeout (TCP connect and SSH banner) and an overall per-host timeout after which
 *   the client is killed (a host that accepts TCP but never answers, or stalls mid-session).
 * - Host keys: StrictHostKeyChecking=yes against a temporary known_hosts holding only the stack's
 *   pinned keys (HostKeyAlias = the host's name, so address/port formats do not matter). A host
 *   without a pinned key is not contacted unless --insecure-host-key.
 * - `-F /dev/null`: the connection is exactly what the stack says (address, port, user), as for
 *   `pulumi up`; the key is --identity, else ssh's defaults (agent, ~/.ssh/id_*).
 * - The record is data from a host: parsed as JSON, only known fields of the expected types are
 *   kept, control characters never reach the terminal, nothing of it is evaluated.
 *
 * Exit: 0 all hosts readable and none failing (a host with no record yet is not failing); 1 a host
 * is failing (result failed/rolled-back, or an unreadable record) or unreachable; 2 usage/config.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { ConfigError } from "../config/schema";
import { fleetFromConfigMap, readStackFile } from "../config/stack";

const USAGE =
  "usage: nixfleet status --stack <name> [--stacks-dir <dir>] [--identity <file>] [--json] [--timeout <seconds>] [--insecure-host-key]";

/** Default overall bound per host (seconds); ssh's ConnectTimeout is min(10, this). */
export const DEFAULT_TIMEOUT = 30;
const PARALLEL = 32;
/** A status.json is well under 8 KiB (the agent caps message at 4000); more is not a record. */
const MAX_RECORD = 64 * 1024;
/** The remote command's exit status when the record does not exist. */
const NO_RECORD_EXIT = 3;

const RESULTS = ["running", "success", "failed", "rolled-back"] as const;
const FAILING: readonly string[] = ["failed", "rolled-back"];
const STRING_FIELDS = [
  "host", "mode", "rollout", "lastRun", "step", "phase", "result", "message",
  "validatedPath", "runningSystem", "profileSystem", "bootedSystem", "goldenPath", "closureDiff",
] as const;

/** The fields of status.json nixfleet understands; any may be missing (older records). */
export type StatusRecord = Partial<Record<(typeof STRING_FIELDS)[number], string>> & {
  needsReboot?: boolean;
  warnings?: string[];
};

export type HostState = "ok" | "failing" | "unreachable" | "no-record" | "bad-record";

export interface HostStatus {
  host: string;
  role: string;
  address: string;
  port: number;
  state: HostState;
  /** Why the host is unreachable, has no or a bad record; the failure message when failing. */
  reason: string | null;
  record: StatusRecord | null;
  /** Problems with the record or the connection worth reading (not the record's own warnings). */
  notes: string[];
}

interface Target {
  index: number;
  name: string;
  role: string;
  address: string;
  port: number;
  user: string;
  hostKey?: string;
  stateDir: string;
}

interface Options {
  identity?: string;
  timeout: number;
  insecureHostKey: boolean;
}

/** POSIX single-quoting: the value reaches the remote shell as one word, never as code. */
export const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** Control characters (C0, DEL, C1, line/paragraph separators) shown as \uXXXX: a record cannot drive the terminal. */
export const printable = (s: string) =>
  s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);

/** Keeps known fields of the expected types; reports the rest. Never throws for odd content. */
export function normalizeRecord(raw: unknown): { record: StatusRecord; notes: string[] } {
  const notes: string[] = [];
  const record: StatusRecord = {};
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new Error("status.json is not a JSON object");
  const obj = raw as Record<string, unknown>;
  for (const key of STRING_FIELDS) {
    const v = obj[key];
    if (v === undefined || v === null) continue;
    if (typeof v === "string") record[key] = v;
    else notes.push(`field ${key} ignored: expected a string, got ${typeof v}`);
  }
  // Records written before runningSystem existed called the profile's system currentSystem.
  if (record.runningSystem === undefined && typeof obj.currentSystem === "string") record.runningSystem = obj.currentSystem;
  if (typeof obj.needsReboot === "boolean") record.needsReboot = obj.needsReboot;
  else if (obj.needsReboot !== undefined && obj.needsReboot !== null) notes.push(`field needsReboot ignored: expected true or false`);
  if (Array.isArray(obj.warnings)) record.warnings = obj.warnings.filter((w): w is string => typeof w === "string");
  if (record.result !== undefined && !(RESULTS as readonly string[]).includes(record.result)) {
    notes.push(`result ${JSON.stringify(record.result)} is not one of ${RESULTS.join(", ")}`);
  }
  return { record, notes };
}

/** Decides a host's state from what reading its record gave. */
export function classify(record: StatusRecord, notes: string[]): { state: HostState; reason: string | null } {
  if (record.result !== undefined && FAILING.includes(record.result)) {
    return { state: "failing", reason: record.message ?? `result ${record.result} (no message in the record)` };
  }
  if (record.result !== undefined && !(RESULTS as readonly string[]).includes(record.result)) {
    return { state: "bad-record", reason: notes.find((n) => n.startsWith("result ")) ?? "unknown result" };
  }
  return { state: "ok", reason: null };
}

interface SshOutcome {
  code: number | null;
  stdout: Buffer;
  stderr: string;
  timedOut: boolean;
  spawnError?: string;
}

function runSsh(args: string[], timeoutMs: number): Promise<SshOutcome> {
  return new Promise((resolve) => {
    const child = spawn("ssh", args, { stdio: ["ignore", "pipe", "pipe"] });
    const out: Buffer[] = [];
    let outLen = 0;
    let stderr = "";
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.stdout.on("data", (d: Buffer) => {
      if (outLen <= MAX_RECORD) out.push(d);
      outLen += d.length;
    });
    child.stderr.on("data", (d: Buffer) => {
      if (stderr.length < 16 * 1024) stderr += d.toString("utf8");
    });
    child.on("error", (e) => {
      clearTimeout(timer);
      resolve({ code: null, stdout: Buffer.alloc(0), stderr: "", timedOut: false, spawnError: e.message });
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr, timedOut });
    });
  });
}

function sshArgs(t: Target, knownHosts: string, opts: Options): string[] {
  const hostKey = t.hostKey
    ? ["-o", "StrictHostKeyChecking=yes", "-o", `UserKnownHostsFile=${knownHosts}`, "-o", `HostKeyAlias=${aliasOf(t)}`]
    : ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]; // only with --insecure-host-key
  const identity = opts.identity ? ["-i", opts.identity, "-o", "IdentitiesOnly=yes"] : [];
  return [
    "-F", "/dev/null",
    "-o", "BatchMode=yes",
    "-o", "GlobalKnownHostsFile=/dev/null",
    ...hostKey,
    "-o", "CheckHostIP=no",
    "-o", `ConnectTimeout=${Math.min(10, opts.timeout)}`,
    // A session that stops answering after the handshake ends within ~10 s, before the overall bound.
    "-o", "ServerAliveInterval=5",
    "-o", "ServerAliveCountMax=2",
    "-o", "LogLevel=ERROR",
    ...identity,
    "-p", String(t.port),
    "-l", t.user,
    "--", t.address,
    remoteCommand(t.stateDir),
  ];
}

const aliasOf = (t: Target) => `nixfleet-host-${t.name}`;

/** One command line for the remote shell; the path is quoted data. `head -c` bounds what comes back. */
function remoteCommand(stateDir: string): string {
  const file = shellQuote(`${stateDir}/status.json`);
  return `test -e ${file} || exit ${NO_RECORD_EXIT}; exec head -c ${MAX_RECORD + 1} -- ${file}`;
}

/** The last lines ssh wrote, minus its banner art, on one line. */
function sshWhy(stderr: string): string {
  const lines = stderr.split("\n").map((l) => l.trim()).filter((l) => l !== "" && !/^@+$/.test(l));
  return printable(lines.slice(-3).join(" | ") || "no message from ssh");
}

async function readHost(t: Target, knownHosts: string, opts: Options): Promise<HostStatus> {
  const base = { host: t.name, role: t.role, address: t.address, port: t.port };
  const fail = (state: HostState, reason: string, notes: string[] = []): HostStatus => ({ ...base, state, reason, record: null, notes });
  const keyPath = `nixfleet:hosts[${t.index}].hostKey`;
  if (!t.hostKey && !opts.insecureHostKey) {
    return fail("unreachable", `not contacted: no pinned host key; set ${keyPath} (e.g. from \`ssh-keyscan -p ${t.port} ${t.address}\`, checked out of band) or pass --insecure-host-key`);
  }
  const notes = t.hostKey ? [] : [`host key NOT checked (--insecure-host-key; ${keyPath} is not set)`];
  const r = await runSsh(sshArgs(t, knownHosts, opts), opts.timeout * 1000);
  const where = `${t.user}@${t.address}:${t.port}`;
  if (r.spawnError) return fail("unreachable", `cannot run ssh: ${r.spawnError}`, notes);
  if (r.timedOut) return fail("unreachable", `no answer from ${where} within ${opts.timeout}s (ssh killed)`, notes);
  if (r.code === 255) {
    const why = sshWhy(r.stderr);
    if (/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/.test(r.stderr)) {
      return fail("unreachable", `host key mismatch at ${where}: the host's key is not the one pinned in ${keyPath}; nothing was read (ssh: ${why})`, notes);
    }
    return fail("unreachable", `ssh to ${where} failed: ${why}`, notes);
  }
  if (r.code === NO_RECORD_EXIT) return fail("no-record", `no record yet: ${t.stateDir}/status.json does not exist (no upgrade has run, or stateDir is wrong)`, notes);
  if (r.code !== 0) return fail("bad-record", `reading ${t.stateDir}/status.json failed (exit ${r.code ?? "signal"}): ${sshWhy(r.stderr)}`, notes);
  if (r.stdout.length > MAX_RECORD) return fail("bad-record", `${t.stateDir}/status.json is larger than ${MAX_RECORD} bytes: not a status record`, notes);
  let parsed: { record: StatusRecord; notes: string[] };
  try {
    parsed = normalizeRecord(JSON.parse(r.stdout.toString("utf8")));
  } catch (e) {
    return fail("bad-record", `${t.stateDir}/status.json is not a status record: ${printable((e as Error).message).slice(0, 200)}`, notes);
  }
  const allNotes = [...notes, ...parsed.notes];
  if (parsed.record.host !== undefined && parsed.record.host !== t.name) {
    allNotes.push(`the record names host ${JSON.stringify(printable(parsed.record.host))}, not ${t.name}`);
  }
  return { ...base, ...classify(parsed.record, parsed.notes), record: parsed.record, notes: allNotes };
}

/** Runs `fn` over `items` with at most `limit` at once, results in input order. */
async function pool<T, R>(items: T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** Reads every host's record. The temporary known_hosts is removed afterwards. */
export async function fleetStatus(targets: Target[], opts: Options): Promise<HostStatus[]> {
  const dir = mkdtempSync(join(tmpdir(), "nixfleet-status-"));
  try {
    const knownHosts = join(dir, "known_hosts");
    writeFileSync(knownHosts, targets.filter((t) => t.hostKey).map((t) => `${aliasOf(t)} ${t.hostKey}\n`).join(""));
    return await pool(targets, PARALLEL, (t) => readHost(t, knownHosts, opts));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `/nix/store/<32 hash>-name` → `<7 hash>…-name`, at most `width` characters. */
function shortPath(p: string | undefined, width = 44): string {
  if (!p) return "-";
  const m = /^\/nix\/store\/([0-9a-z]{32})-(.*)$/.exec(p);
  const s = printable(m ? `${m[1].slice(0, 7)}…-${m[2]}` : p);
  return s.length > width ? `${s.slice(0, width - 1)}…` : s;
}

const cut = (s: string, width: number) => (s.length > width ? `${s.slice(0, width - 1)}…` : s);

function row(s: HostStatus): string[] {
  const r = s.record ?? {};
  let system = shortPath(r.goldenPath);
  if (r.validatedPath && r.validatedPath !== r.goldenPath) system = `${r.goldenPath ? system : "-"} / ${shortPath(r.validatedPath)}`;
  const result =
    s.state === "unreachable" ? "UNREACHABLE"
    : s.state === "no-record" ? "no record"
    : s.state === "bad-record" ? "BAD RECORD"
    : `${r.result ? printable(r.result) : "?"}${r.mode ? ` (${printable(r.mode)})` : ""}`;
  let why = "";
  if (s.state === "failing") why = `${printable(r.phase ?? r.step ?? "?")}: ${printable(s.reason ?? "")}`;
  else if (s.reason) why = printable(s.reason);
  const reboot = r.needsReboot === true ? "yes" : r.needsReboot === false ? "no" : "-";
  return [s.host, s.role, shortPath(r.runningSystem), system, r.lastRun ? printable(r.lastRun) : "-", result, cut(why, 80) || "-", reboot];
}

export function formatTable(statuses: HostStatus[]): string {
  const head = ["HOST", "ROLE", "RUNNING", "GOLDEN / VALIDATED", "LAST RUN", "RESULT", "FAILED STEP: WHY", "REBOOT"];
  const rows = [head, ...statuses.map(row)];
  const widths = head.map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  ")).join("\n");
}

export const exitCodeFor = (statuses: HostStatus[]) =>
  statuses.some((s) => s.state === "failing" || s.state === "unreachable" || s.state === "bad-record") ? 1 : 0;

export async function statusMain(argv: string[]): Promise<number> {
  let values: { stack?: string; "stacks-dir"?: string; identity?: string; json?: boolean; timeout?: string; "insecure-host-key"?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        stack: { type: "string" },
        "stacks-dir": { type: "string" },
        identity: { type: "string" },
        json: { type: "boolean" },
        timeout: { type: "string" },
        "insecure-host-key": { type: "boolean" },
      },
    }));
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (!values.stack) {
    console.error(`--stack is required\n${USAGE}`);
    return 2;
  }
  const timeout = values.timeout === undefined ? DEFAULT_TIMEOUT : Number(values.timeout);
  if (!Number.isInteger(timeout) || timeout < 1 || timeout > 600) {
    console.error(`--timeout ${JSON.stringify(values.timeout)}: allowed: a whole number of seconds from 1 to 600\n${USAGE}`);
    return 2;
  }
  const stackFile = join(values["stacks-dir"] ?? "stacks", `Pulumi.${values.stack}.yaml`);
  let targets: Target[];
  try {
    targets = fleetFromConfigMap(readStackFile(stackFile)).hosts.map((h) => ({
      index: h.index, name: h.name, role: h.role, address: h.address, port: h.port, user: h.user, hostKey: h.hostKey, stateDir: h.stateDir,
    }));
  } catch (e) {
    // ConfigError names every bad field; anything else is the file itself (missing, not YAML).
    console.error(`${stackFile}: ${e instanceof ConfigError ? e.message : (e as Error).message}`);
    return 2;
  }
  const statuses = await fleetStatus(targets, { identity: values.identity, timeout, insecureHostKey: values["insecure-host-key"] ?? false });
  if (values.json) {
    console.log(JSON.stringify(statuses, null, 2));
  } else {
    console.log(formatTable(statuses));
    for (const s of statuses) for (const n of s.notes) console.error(`warning: ${s.host}: ${printable(n)}`);
    for (const s of statuses) {
      if (s.state === "unreachable" || s.state === "bad-record") console.error(`error: ${s.host}: ${s.reason}`);
    }
  }
  console.error(`nixfleet status: ${summary(statuses)}`);
  return exitCodeFor(statuses);
}

/** "3 hosts: 1 ok, 1 failing, 1 no-record", on stderr so a script reading --json is not disturbed. */
function summary(statuses: HostStatus[]): string {
  const counts = new Map<HostState, number>();
  for (const s of statuses) counts.set(s.state, (counts.get(s.state) ?? 0) + 1);
  return `${statuses.length} host${statuses.length === 1 ? "" : "s"}: ${[...counts].map(([k, n]) => `${n} ${k}`).join(", ")}`;
}
