// SIMULATION — checkout owners: machine-wide system users, their access to the fleet root and to origin.
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { run, shq, sleep } from "./process";

/**
 * Creates `owner` as a system user unless it exists (the simulation runs as root). Users are
 * machine-wide and shared by every fleet on the machine; the home in /etc/passwd is the simRoot of
 * the fleet that created the user (nothing relies on it). Concurrent fleets may race: retried.
 */
export async function ensureUser(owner: string, home: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    if ((await run("id", ["-u", owner])).code === 0) return;
    const r = await run("useradd", ["--system", "--user-group", "--home-dir", home, "--no-create-home", "--shell", "/usr/sbin/nologin", owner]);
    if (r.code === 0) return;
    // 9: the name was taken meanwhile (a parallel fleet); 10: /etc/passwd is locked by another useradd.
    if (attempt >= 50 || ![9, 10].includes(r.code)) throw new Error(`fleet: useradd ${owner} failed (exit ${r.code}): ${r.stderr}`);
    await sleep(100);
  }
}

/**
 * Owners must reach their home under the fleet root and origin.git: adds o+x (search, not list) to
 * `dir` and each ancestor lacking it, inside the fleet root or the temp dir only (mkdtemp makes 0700
 * dirs); any other blocking ancestor is an error rather than a change to the machine.
 */
export async function letOthersIn(dir: string, root: string): Promise<void> {
  const tmp = path.resolve(os.tmpdir());
  for (let d = dir; ; d = path.dirname(d)) {
    const st = await fs.stat(d);
    if ((st.mode & 0o001) === 0) {
      const ours = d === root || d.startsWith(`${root}/`) || d.startsWith(`${tmp}/`);
      if (!ours) {
        throw new Error(`fleet: checkout owners cannot reach ${root}: ${d} is not searchable by other users; put the fleet under ${tmp}`);
      }
      await fs.chmod(d, (st.mode & 0o7777) | 0o001);
    }
    if (path.dirname(d) === d) return;
  }
}

/** How an owner's git reaches the root-owned bare origin (see fleet/README.md, "Owners"). */
export function ownerTransport(originDir: string) {
  const safe = shq(`safe.directory=${originDir}`);
  return { uploadpack: `git -c ${safe} upload-pack`, receivepack: `git -c ${safe} receive-pack` };
}
