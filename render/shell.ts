// The only shell-quoting code in nixfleet. Every word that reaches a shell (Pulumi's remote
// commands, rendered scripts) goes through shellQuote; tested against real bash and dash.

// Words made only of these characters mean the same quoted or bare in POSIX sh and bash:
// no expansion, globbing, splitting or operators. `~` and `#` are left out (tilde expansion,
// comments) and so is a leading `=` (zsh's `=cmd` expansion).
const SAFE = /^[A-Za-z0-9_./:=@%+,-]+$/;
// A bare `NAME=…` as the first word of a command is an assignment, not a command name: quote it.
const ASSIGNMENT = /^[A-Za-z_][A-Za-z0-9_]*=/;

// Messages name the word's position, never its text: values may be secrets.
function checkWord(word: string, what: string): void {
  if (word.includes("\0")) {
    const at = word.indexOf("\0");
    throw new Error(`${what} contains a NUL character at index ${at}, which no shell word can carry: remove it`);
  }
  // A lone UTF-16 surrogate would be sent as U+FFFD: the word would silently change.
  if (/[\ud800-\udfff]/u.test(word)) {
    throw new Error(`${what} contains a lone UTF-16 surrogate, which cannot be sent as UTF-8: remove it`);
  }
}

/** One shell word: bare when it is safe, otherwise in single quotes (`'` becomes `'\''`). */
export function shellQuote(word: string): string {
  return quote(word, "shell word");
}

function quote(word: string, what: string): string {
  if (typeof word !== "string") throw new Error(`${what} must be a string, got ${typeof word}`);
  checkWord(word, what);
  if (SAFE.test(word) && !word.startsWith("=") && !ASSIGNMENT.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** A command line: each word quoted, joined by spaces. */
export function shellCommand(...words: string[]): string {
  if (words.length === 0) throw new Error("shellCommand needs at least the command name");
  return words.map((w, i) => quote(w, `shell word ${i}`)).join(" ");
}

const ENV_NAME = /^[A-Z_][A-Z0-9_]*$/;

/** `A='x' B=y` assignments, sorted by name, to prefix a command (`${shellEnv(env)} cmd`). */
export function shellEnv(vars: Record<string, string>): string {
  const names = Object.keys(vars).sort();
  for (const name of names) {
    if (!ENV_NAME.test(name)) {
      throw new Error(
        `invalid environment variable name ${JSON.stringify(name)}: use upper-case letters, digits ` +
          `and _ only, not starting with a digit (^[A-Z_][A-Z0-9_]*$)`,
      );
    }
  }
  return names.map((name) => `${name}=${quote(vars[name], `environment variable ${name}`)}`).join(" ");
}
