/**
 * A bounded intern table: equal strings (and the values derived from them) become one shared
 * object, so 100,000 cached answers of the same issuer, client and scopes hold one copy of
 * each instead of 100,000. Bounded: once full, new values are simply not shared (a flood of
 * distinct values costs nothing here).
 */
export interface Intern<Value> {
  get(text: string): Value;
}

export function createIntern<Value>(derive: (text: string) => Value, max = 4096): Intern<Value> {
  const table = new Map<string, Value>();
  return {
    get(text) {
      const known = table.get(text);
      if (known !== undefined) return known;
      const value = derive(text);
      if (table.size < max) table.set(text, value);
      return value;
    },
  };
}
