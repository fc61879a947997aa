import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { staleAgentSocket } from "./agent";

const dir = mkdtempSync(path.join(os.tmpdir(), "nixfleet-agent-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("staleAgentSocket", () => {
  it("accepts no agent, an empty variable and a real socket", async () => {
    expect(staleAgentSocket({})).toBeUndefined();
    expect(staleAgentSocket({ SSH_AUTH_SOCK: "" })).toBeUndefined();
    const sock = path.join(dir, "agent.sock");
    const server = net.createServer().listen(sock);
    await new Promise((r) => server.once("listening", r));
    expect(staleAgentSocket({ SSH_AUTH_SOCK: sock })).toBeUndefined();
    server.close();
  });

  it("names a missing socket or a plain file, and says how to run instead", () => {
    const file = path.join(dir, "not-a-socket");
    writeFileSync(file, "");
    for (const sock of [path.join(dir, "gone.sock"), file]) {
      expect(staleAgentSocket({ SSH_AUTH_SOCK: sock })).toMatch(/is not an agent socket.*SSH_AUTH_SOCK= pulumi up/);
    }
  });
});
