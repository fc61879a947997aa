// Prints one plain closing line, `tests: N passed, N failed, N skipped`, that any CI can read
// without knowing vitest's own summary format.
import type { Reporter, RunnerTask, RunnerTestFile } from "vitest";

function leaves(tasks: RunnerTask[]): RunnerTask[] {
  return tasks.flatMap((t) => ("tasks" in t && Array.isArray(t.tasks) ? leaves(t.tasks) : [t]));
}

export default class SummaryReporter implements Reporter {
  onFinished(files: RunnerTestFile[] = [], errors: unknown[] = []) {
    const tests = leaves(files);
    const passed = tests.filter((t) => t.result?.state === "pass").length;
    const failed = tests.filter((t) => t.result?.state === "fail").length + files.filter((f) => f.result?.state === "fail" && leaves([f]).length === 0).length;
    const skipped = tests.filter((t) => t.mode === "skip" || t.mode === "todo").length;
    console.log(`\ntests: ${passed} passed, ${failed + errors.length} failed, ${skipped} skipped`);
  }
}
