/**
 * The bundle: every file one host gets, as the stdin of `<host>-deploy` (docs/rollout.md §5).
 *
 *   nixfleet-bundle 1
 *   file <0644|0755> <sha256> <text|gzip-base64> <lines> <relative path>
 *   <that many lines>
 *   end
 *
 * Rendered files travel as text, so `pulumi preview --diff` shows the changed Nix lines. The two
 * shipped files (module and script) are the same for every host and long: they travel gzipped, so
 * each host's state stays small. Pure and deterministic: the same files give the same bytes, so an
 * unchanged fleet shows no diff.
 */
import { createHash } from "node:crypto";
import { gunzipSync, gzipSync } from "node:zlib";
import { AGENT_DIR, AGENT_PACKAGE, MODULE_FILE, TABLE_FILE, type RenderedFile } from "./files";

export const BUNDLE_MAGIC = "nixfleet-bundle 1";
/** Files sent compressed (the module, the settings table and the agent's source, the same for every host); the rest as text. */
const gzipped = (p: string) => p === MODULE_FILE || p === TABLE_FILE || p.startsWith(`${AGENT_DIR}/`);
const REL_PATH = /^[A-Za-z0-9._+-]+(\/[A-Za-z0-9._+-]+)*$/;

export type Encoding = "text" | "gzip-base64";
export interface BundleEntry extends RenderedFile {
  readonly mode: "0644" | "0755";
  readonly sha256: string;
  readonly encoding: Encoding;
}

export const sha256 = (text: string | Buffer) => createHash("sha256").update(text).digest("hex");

/** `base64 -w 76` of `gzip -9n`: Node's gzip writes mtime 0 and no name, so equal input gives equal bytes. */
function gzipLines(content: string): string[] {
  const b64 = gzipSync(Buffer.from(content, "utf8"), { level: 9 }).toString("base64");
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 76) lines.push(b64.slice(i, i + 76));
  return lines;
}

function checkPath(p: string): void {
  // The bootstrap writes under its stage dir: a path must never climb out of it or be absolute.
  if (p.length > 200 || !REL_PATH.test(p) || p.split("/").some((seg) => seg === "." || seg === "..")) {
    throw new Error(`bundle: file path ${JSON.stringify(p.slice(0, 80))} is not allowed; allowed: a relative '/'-separated path of letters, digits and ._+- without '.' or '..' segments, at most 200 characters`);
  }
}

/** The bundle text for `files`, in their order; the agent's package.nix must be among them (the bootstrap builds it). */
export function renderBundle(files: readonly RenderedFile[]): string {
  if (!files.some((f) => f.path === AGENT_PACKAGE)) throw new Error(`bundle: ${AGENT_PACKAGE} is missing; the bootstrap cannot build the agent without it`);
  const ordered = files;
  const out = [BUNDLE_MAGIC];
  const seen = new Set<string>();
  for (const f of ordered) {
    checkPath(f.path);
    if (seen.has(f.path)) throw new Error(`bundle: ${f.path} appears twice`);
    seen.add(f.path);
    if (!f.content.endsWith("\n")) throw new Error(`bundle: ${f.path} does not end with a newline (every rendered file must)`);
    const mode = f.content.startsWith("#!") ? "0755" : "0644";
    const encoding: Encoding = gzipped(f.path) ? "gzip-base64" : "text";
    const lines = encoding === "text" ? f.content.slice(0, -1).split("\n") : gzipLines(f.content);
    out.push(`file ${mode} ${sha256(f.content)} ${encoding} ${lines.length} ${f.path}`, ...lines);
  }
  out.push("end");
  return `${out.join("\n")}\n`;
}

/** Rollout token: the first 16 hex of sha256(bundle), with `-r<N>` for a retry nonce N > 0 (§1). */
export const rolloutToken = (bundle: string, retry = 0) => `${sha256(bundle).slice(0, 16)}${retry > 0 ? `-r${retry}` : ""}`;

/**
 * Reads a bundle back (tests, and a check that what we send is what the bootstrap reads).
 * Strict: any deviation from the format is an error naming the line.
 */
export function parseBundle(bundle: string): BundleEntry[] {
  const lines = bundle.split("\n");
  if (lines.pop() !== "") throw new Error("bundle: does not end with a newline");
  if (lines[0] !== BUNDLE_MAGIC) throw new Error(`bundle line 1: expected ${JSON.stringify(BUNDLE_MAGIC)}`);
  const entries: BundleEntry[] = [];
  let i = 1;
  for (;;) {
    const head = lines[i];
    if (head === "end") break;
    const m = /^file (0644|0755) ([0-9a-f]{64}) (text|gzip-base64) (\d+) (\S+)$/.exec(head ?? "");
    if (!m) throw new Error(`bundle line ${i + 1}: expected a file header or "end"`);
    const [, mode, sum, encoding, count, path] = m;
    const body = lines.slice(i + 1, i + 1 + Number(count));
    if (body.length !== Number(count)) throw new Error(`bundle line ${i + 1}: ${path} is cut short`);
    const content = encoding === "text" ? `${body.join("\n")}\n` : gunzipSync(Buffer.from(body.join(""), "base64")).toString("utf8");
    if (sha256(content) !== sum) throw new Error(`bundle: ${path} does not match its sha256`);
    entries.push({ path, content, mode: mode as BundleEntry["mode"], sha256: sum, encoding: encoding as Encoding });
    i += 1 + Number(count);
  }
  if (i !== lines.length - 1) throw new Error(`bundle line ${i + 2}: text after "end"`);
  return entries;
}
