/**
 * The command provider uses `SSH_AUTH_SOCK` whenever it is set, and a socket that no agent answers
 * on fails every host at once (dial unix …: no such file), not retried — even with a private key
 * (verified against the real pulumi-command v1.2.1, toolchain/README.md). nixfleet authenticates with
 * `nixfleet:sshPrivateKey`, so a stale agent must not break a rollout: this check stops the program
 * before any resource exists and says what to do. It reads the environment the provider inherits:
 * call it from a program run by `pulumi up` (index.ts does); an Automation API program sets the
 * provider's environment itself (fleet/stack.ts empties SSH_AUTH_SOCK).
 */
import { statSync } from "node:fs";

export function staleAgentSocket(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const sock = env.SSH_AUTH_SOCK;
  if (!sock) return undefined;
  try {
    if (statSync(sock).isSocket()) return undefined;
  } catch {
    // missing: stale
  }
  return (
    `SSH_AUTH_SOCK=${JSON.stringify(sock.slice(0, 200))} is not an agent socket, and the command provider would fail ` +
    "every host with it. nixfleet uses nixfleet:sshPrivateKey, not an agent: run `SSH_AUTH_SOCK= pulumi up` " +
    "(or start the agent again)."
  );
}
