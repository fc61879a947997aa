// Entry point for `pulumi up` / `pulumi preview --diff`: one stack per role or environment,
// its config in stacks/Pulumi.<stack>.yaml.
import { fleetProgram, staleAgentSocket } from "./components";

const agent = staleAgentSocket();
if (agent) throw new Error(agent);

export const hosts = fleetProgram().hosts;
