// The first rollout to a stock NixOS host without git (issue 13): push mode runs in an SSH session whose PATH
// is the system's, and a stock system has no git. The rollout stops before changing anything and says
// exactly what to add; once the user has, a plain up converges and nixfleet's module keeps git in the
// system. Real engine, sshd, systemd, Nix 2.26 (fleet/machine); SIMULATED NixOS (nixos-lite).
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostPath, sshExec } from "../../fleet/fleet";
import { editHostConfig, hostStatus, startE2E, systemState, validatedLink, type E2E } from "./harness";

let t: E2E;

beforeAll(async () => {
  t = await startE2E("firstrun", 2480, { hosts: [{ name: "bare", role: "server", git: false }] });
});
afterAll(async () => t?.stop());

describe("a stock host without git", () => {
  it("the first up stops before changing anything and names what to add; after the user adds git, a plain up converges", async () => {
    const h = t.host("bare");
    expect((await sshExec(t.fleet, h, "command -v git || echo no-git")).stdout.trim()).toBe("no-git");
    const before = await systemState(h);
    const err = await t.stack.up({ continueOnError: true }).then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/bare-deploy/);
    expect(err?.message).toMatch(/git is not on this host's PATH .*Add it to the host's configuration once \(environment\.systemPackages = \[ pkgs\.git \]; in hosts\/bare\/configuration\.nix\), rebuild the host \(nixos-rebuild switch\), then run pulumi up again\. Nothing was changed/);
    expect(await systemState(h)).toEqual(before);
    expect(await fs.stat(hostPath(h, path.join(h.checkout, "modules"))).catch(() => null)).toBeNull();
    expect(await hostStatus(h)).toMatchObject({ result: "failed" });

    // What the message says, as the user would: add git to the configuration, rebuild the host.
    const cfg = hostPath(h, path.join(h.checkout, "hosts", "bare", "configuration.nix"));
    await fs.writeFile(cfg, (await fs.readFile(cfg, "utf8")).replace("{ lib, ... }:", "{ lib, pkgs, ... }:"));
    await editHostConfig(h, "  environment.systemPackages = [ pkgs.git ];");
    const flake = `${h.checkout}#nixosConfigurations.bare.config.system.build.toplevel`;
    const rebuild = await sshExec(
      t.fleet,
      h,
      `set -e; nix --extra-experimental-features 'nix-command flakes' build -o /run/rebuilt '${flake}'; s=$(readlink /run/rebuilt); nix-env -p /nix/var/nix/profiles/system --set "$s"; "$s/bin/switch-to-configuration" switch`,
    );
    expect(rebuild.code, rebuild.stderr).toBe(0);
    expect((await sshExec(t.fleet, h, "command -v git")).stdout.trim()).toBe("/run/current-system/sw/bin/git");

    await t.stack.up({ continueOnError: true });
    const final = await validatedLink(h);
    expect(await systemState(h)).toEqual({ running: final, profile: final, boot: final });
    // nixfleet's module keeps git in the system from now on.
    expect((await sshExec(t.fleet, h, "readlink -f \"$(command -v git)\"")).stdout.trim()).toBe("/usr/bin/git");
  });
});
