/** Summaries of benchmark samples: median, p99 and max (plus min and the sample count). */

export interface Stats {
  /** Number of samples. */
  n: number;
  min: number;
  median: number;
  /** The 99th percentile (nearest rank): with 100 samples, the second largest. */
  p99: number;
  max: number;
}

/** The q-quantile (0..1) of sorted values by nearest rank. */
function quantile(sorted: number[], q: number): number {
  const rank = Math.ceil(q * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** Summary of values; undefined when there are none (a case that produced no sample). */
export function summarize(values: number[]): Stats | undefined {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return undefined;
  const s = [...finite].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  return { n: s.length, min: s[0], median, p99: quantile(s, 0.99), max: s[s.length - 1] };
}

/** a / b rounded to two decimals; undefined when either is missing or b is not positive. */
export function ratio(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined || b === undefined || !(b > 0)) return undefined;
  return Math.round((a / b) * 100) / 100;
}

/** Rounds every number of a Stats to `digits` decimals (for the JSON report). */
export function rounded(s: Stats | undefined, digits = 1): Stats | undefined {
  if (!s) return undefined;
  const f = 10 ** digits;
  const r = (v: number) => Math.round(v * f) / f;
  return { n: s.n, min: r(s.min), median: r(s.median), p99: r(s.p99), max: r(s.max) };
}

/** A tail summary: median, p90 (nearest rank) and max, for cases judged by their tail. */
export interface TailStats {
  n: number;
  min: number;
  median: number;
  /** The 90th percentile (nearest rank): with 30 samples, the 27th smallest (the fourth largest). */
  p90: number;
  max: number;
}

/** Tail summary of values, each rounded to `digits` decimals; undefined when there are none. */
export function tailStats(values: number[], digits = 1): TailStats | undefined {
  const s = summarize(values);
  if (!s) return undefined;
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  const f = 10 ** digits;
  const r = (v: number) => Math.round(v * f) / f;
  return { n: s.n, min: r(s.min), median: r(s.median), p90: r(quantile(sorted, 0.9)), max: r(s.max) };
}

/** p90 of a over p90 of b (two decimals): how far a tail is from the floor's. */
export function tailRatio(a: TailStats | undefined, b: TailStats | undefined): number | undefined {
  return ratio(a?.p90, b?.p90);
}
