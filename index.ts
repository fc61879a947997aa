// Entry point for `pulumi up` / `pulumi preview --diff`: one stack per role or environment,
// its config in stacks/Pulumi.<stack>.yaml.
import { staleAgentSocket } from "./components/agent";
import { fleetProgram } from "./components/program";

const agent = staleAgentSocket();
if (agent) throw new Error(agent);

export const hosts = fleetProgram().hosts;
