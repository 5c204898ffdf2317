/**
 * "did you mean `scopes`?" for a misspelt key or value. A misspelt key is an error (an unknown
 * `scope:` must never silently mean "no scope required"); naming the right spelling turns the
 * error into a one-keystroke fix.
 */

/** Optimal string alignment distance: Levenshtein plus a transposition (`hots` → `host` is 1). */
export function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[][] = Array.from({ length: rows }, (_, i) =>
    Array.from({ length: cols }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  const at = (i: number, j: number): number => d[i]?.[j] ?? Number.POSITIVE_INFINITY;
  for (let i = 1; i < rows; i += 1) {
    for (let j = 1; j < cols; j += 1) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        best = Math.min(best, at(i - 2, j - 2) + 1);
      }
      (d[i] as number[])[j] = best;
    }
  }
  return at(a.length, b.length);
}

/**
 * The candidate nearest to `input` when it is near enough to be a slip of the keyboard (case,
 * `-` for `_`, about one edit in three characters, or a name cut short), else undefined.
 */
export function closest(input: string, candidates: readonly string[]): string | undefined {
  const fold = (word: string) => word.toLowerCase().replaceAll('-', '_');
  const typed = fold(input);
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const candidate of candidates) {
    const distance = editDistance(typed, fold(candidate));
    const allowed = Math.max(1, Math.floor(Math.max(typed.length, candidate.length) / 3));
    if (distance <= allowed && distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  if (best === undefined && typed.length >= 4) {
    // `trust_any` for `trust_any_proxy`: a name cut short.
    const extended = candidates.filter((candidate) => fold(candidate).startsWith(typed));
    if (extended.length === 1) best = extended[0];
  }
  return best;
}

export const didYouMean = (input: string, candidates: readonly string[]): string => {
  const suggestion = closest(input, candidates);
  return suggestion === undefined ? '' : `; did you mean \`${suggestion}\`?`;
};
