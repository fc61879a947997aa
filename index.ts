// Entry point for `pulumi up` / `pulumi preview --diff`: one stack per role or environment,
// its config in stacks/Pulumi.<stack>.yaml.
import { fleetProgram } from "./components";

export const hosts = fleetProgram().hosts;
