/**
 * Two things a component needs from the engine, through the SDK's public API only (no `Output`
 * internals), so nixfleet works with any @pulumi/pulumi ^3.248 the user's project has:
 *
 * - `ended`: how a command ended in this run. A failed or skipped resource's outputs are UNKNOWN
 *   under `--continue-on-error` (verified with the real engine, 3.248), so `apply` on them never
 *   runs and a status built on them would never resolve.
 * - `lastOutputs`: what this component registered in the stack's last state (the engine's builtin
 *   `pulumi:pulumi:readStackResourceOutputs`, the same backend call a StackReference makes). It is
 *   how a host whose confirm failed deploys again on the next plain `up`, with nothing to wire.
 */
import * as pulumi from "@pulumi/pulumi";

/**
 * `value` once its resource finished in this run, or `undefined` when the resource failed, was
 * skipped (an earlier wave or its own deploy failed) or could not be registered. During preview an
 * unknown value means "not run yet" and stays unknown.
 *
 * How, with public API only: `pulumi.isSecret(value)` settles when the engine has answered for the
 * resource, whether its outputs are known or not; `apply` on a known value has run by then, because
 * the SDK settles an output's value, knownness and secretness together and `apply` waits only on
 * those (promise callbacks). `setImmediate` runs after every pending promise callback, so if the
 * `apply` has not run by then, the value is unknown: the resource did not succeed.
 */
export function ended<T>(value: pulumi.Output<T>): pulumi.Output<T | undefined> {
  if (pulumi.runtime.isDryRun()) return value;
  const seen: { value?: T } = {};
  // recover: a registration error (e.g. a bad Output value in the connection) reads as "did not run".
  pulumi.recover(value as pulumi.Output<T | undefined>, () => undefined).apply((v) => (seen.value = v));
  const answered = pulumi.isSecret(value).catch(() => false);
  return pulumi.output(answered.then(() => new Promise<void>((r) => setImmediate(r))).then(() => seen.value)) as pulumi.Output<T | undefined>;
}

/** This program's stack, as the backend names it (the name a StackReference to it takes). */
const ownStack = () => `${pulumi.getOrganization()}/${pulumi.getProject()}/${pulumi.getStack()}`;

/**
 * The outputs `resource` registered in the stack's last state (undefined on its first run, under
 * mocks, or when the backend cannot say). Read from the checkpoint: during an `up` that is the last
 * run's until this component registers its own outputs again, which waits for this value.
 */
export function lastOutputs(resource: pulumi.Resource): pulumi.Output<Record<string, unknown> | undefined> {
  // Through a plain promise: an Output of `resource.urn` would carry the component as a dependency,
  // and the component's own children, whose inputs are built from this value, would wait on themselves.
  const urn = new Promise<string>((resolve) => resource.urn.apply(resolve));
  return pulumi.output(urn.then((u) => readLast(resource, u)));
}

async function readLast(resource: pulumi.Resource, urn: string): Promise<Record<string, unknown> | undefined> {
  let stackName: string;
  try {
    stackName = ownStack();
  } catch {
    return undefined; // unit tests with mocks and no organization: there is no last state
  }
  try {
    const r = (await pulumi.runtime.invoke("pulumi:pulumi:readStackResourceOutputs", { stackName })) as {
      outputs?: Record<string, { outputs?: Record<string, unknown> } | undefined>;
    };
    const mine = r?.outputs?.[urn]?.outputs;
    return mine !== null && typeof mine === "object" ? mine : undefined;
  } catch (e) {
    void pulumi.log.warn(`nixfleet: cannot read this component's last outputs (${String(e).slice(0, 200)}); a host whose confirm failed last run is not deployed again by this run`, resource);
    return undefined;
  }
}
