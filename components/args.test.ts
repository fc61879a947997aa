// The user-facing args under pulumi.runtime.setMocks: no engine, no hosts. What is checked is what a
// user sees: the construction error, the error when an Output resolves, and the commands' inputs.
import * as pulumi from "@pulumi/pulumi";
import { describe, expect, it, vi } from "vitest";
import { parseBundle } from "../render/bundle";
import { argsSource, resolveArgs } from "./validate";
import { Fleet } from "./fleet";
import { Host } from "./host";

// nix/push-bootstrap.sh is the script engineer's; these tests need only some text to embed.
vi.mock("../render/files", async (importOriginal) => ({ ...(await importOriginal<typeof import("../render/files")>()), bootstrapText: () => "exit 99\n" }));

const ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEH2gZv+5yuSODmVezjLQzu7uLzR+x1a8IfopTp8cIQ9";

interface Seen {
  name: string;
  inputs: Record<string, any>;
}

/** Runs `program` under mocks until its component's status resolves; returns the resources created. */
async function run(program: () => Fleet | Host): Promise<Seen[]> {
  const seen: Seen[] = [];
  pulumi.runtime.setMocks(
    {
      newResource: (args) => {
        seen.push({ name: args.name, inputs: args.inputs });
        return { id: `${args.name}-id`, state: args.inputs };
      },
      call: (args) => args.inputs,
    },
    "nixfleet",
    "test",
    false,
  );
  let status: pulumi.Output<unknown> = pulumi.output(undefined);
  await pulumi.runtime.runInPulumiStack(async () => {
    status = program().status;
    return {};
  });
  await new Promise((resolve) => status.apply(resolve));
  return seen;
}

/** The error an Output settles with (its apply callbacks never run then). */
async function failure(o: pulumi.Output<unknown>): Promise<unknown> {
  // Every internal promise of a failed Output rejects; a program's would fail it (this test only looks).
  const internal = o as unknown as { promise: () => Promise<unknown>; isKnown: Promise<boolean>; isSecret: Promise<boolean>; allResources?: () => Promise<unknown> };
  const [value] = await Promise.allSettled([internal.promise(), internal.isKnown, internal.isSecret, internal.allResources?.()]);
  return value.status === "rejected" ? value.reason : undefined;
}

const host = (over: Record<string, unknown> = {}) => ({ name: "vm", role: "server", address: "10.0.0.5", configPath: "/etc/nixos/nix-config", hostKey: ED25519, ...over });

describe("Fleet and Host args from a user's program", () => {
  it("address, port, hostKey and configPath may be Outputs (a VM made in the same program)", async () => {
    const seen = await run(
      () =>
        new Fleet("lab", {
          privateKey: pulumi.secret("k"),
          hosts: [host({ address: pulumi.output("10.1.2.3"), port: pulumi.output(2222), hostKey: pulumi.output(ED25519), configPath: pulumi.output("/srv/vm-config") })],
        }),
    );
    const deploy = seen.find((s) => s.name === "lab-vm-deploy")!;
    // The connection is a secret (it holds the key): its value sits under "value".
    expect(deploy.inputs.connection.value).toMatchObject({ host: "10.1.2.3", port: 2222, hostKey: ED25519 });
    expect(deploy.inputs.create).toContain("AUTO_UPGRADE_CONFIG_PATH=/srv/vm-config");
    const nix = parseBundle(deploy.inputs.stdin).find((f) => f.path === "hosts/vm/nixfleet.nix")!;
    expect(nix.content).toContain('"/srv/vm-config"');
  });

  it("a bad plain value throws at construction, naming the field in the args' terms", () => {
    const make = (address: string) => () => new Fleet("lab", { privateKey: "k", hosts: [host(), host({ name: "b", address })] });
    expect(make("bad_host!")).toThrow(/^invalid args of Fleet "lab":\n {2}hosts\[1\]\.address: "bad_host!" is not allowed; allowed: an RFC 1123 hostname/);
    expect(make("10.0.0.5")).toThrow(/hosts\[1\]\.address: "10\.0\.0\.5:22" is already hosts\[0\]'s address and port/);
    expect(() => new Fleet("lab", { privateKey: "k", hosts: [host({ role: "kiosk" })] })).toThrow(/hosts\[0\]\.role: "kiosk" is not a role; allowed: desktop, laptop, server, pi/);
  });

  // Registering a command whose connection holds this Output then fails with the error (the real
  // engine fails the update: "error serializing property connection: invalid args of Fleet …").
  it("a bad Output value fails when it resolves, naming the field; fleet-wide checks included", async () => {
    const fleet = argsSource('args of Fleet "lab"', false);
    const bad = resolveArgs({ hosts: [host({ address: pulumi.output("bad_host!") })] }, fleet);
    expect(bad.known.hosts[0].name).toBe("vm"); // the rest was valid at construction
    expect(String(await failure(bad.resolved))).toMatch(/invalid args of Fleet "lab":\n {2}hosts\[0\]\.address: "bad_host!" is not allowed/);
    const same = resolveArgs({ hosts: [host(), host({ name: "b", address: pulumi.output("10.0.0.5") })] }, fleet);
    expect(String(await failure(same.resolved))).toMatch(/hosts\[1\]\.address: "10\.0\.0\.5:22" is already hosts\[0\]'s address and port/);
    const port = resolveArgs({ hosts: [host({ port: pulumi.output(0) })] }, argsSource('args of Host "web"', true));
    expect(String(await failure(port.resolved))).toMatch(/invalid args of Host "web":\n {2}port: must be a port number/);
    expect(await failure(resolveArgs({ hosts: [host({ address: pulumi.output("10.0.0.6") })] }, fleet).resolved)).toBeUndefined();
  });

  it("a Host alone: a custom role from its preset, errors name the bare field", async () => {
    const roles = { kiosk: { preset: "desktop" as const, schedule: "Mon 03:00" } };
    const seen = await run(() => new Host("web", { ...host({ role: "kiosk", address: pulumi.output("10.9.9.9") }), roles, privateKey: "k" }));
    const deploy = seen.find((s) => s.name === "web-deploy")!;
    expect(deploy.inputs.connection.value.host).toBe("10.9.9.9");
    // desktop's built-in commit-back, kept by the custom role.
    expect(deploy.inputs.create).toContain("AUTO_UPGRADE_COMMIT=true");
    const role = parseBundle(deploy.inputs.stdin).find((f) => f.path === "roles/form-kiosk.nix")!;
    expect(role.content).toContain('"Mon 03:00"');
    expect(() => new Host("web", { ...host({ configPath: "etc" }), privateKey: "k" })).toThrow(/^invalid args of Host "web":\n {2}configPath: "etc": must be an absolute path/);
  });
});
