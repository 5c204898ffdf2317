/**
 * Method override through the query string (`?_method=DELETE`): Rails, Laravel, Symfony and
 * Express's method-override middleware execute a POST as the method it names, after the
 * gateway authorised it as a POST. The header forms are stripped before forwarding (see
 * upstream-headers.ts); a query parameter cannot be stripped without changing what the
 * upstream receives, so a request carrying one is refused (PRODUCT.md "Routing").
 *
 * Parameter names are read the way the most lenient of those frameworks reads them: `&` and
 * `;` separate pairs, `+` is a space, escapes are decoded (repeatedly, for upstreams that
 * decode twice), case is ignored, and PHP's rules apply (leading spaces dropped, ` ` and `.`
 * become `_`, `name[...]` is `name`) — so `%5Fmethod`, `_METHOD`, `.method` and
 * `_method[]` are all `_method`.
 */

/** Cheap pre-check: a name that could read as `_method` contains `method` or an escape. */
const MIGHT_OVERRIDE = /method|%/i;
const MAX_DECODE_ROUNDS = 3;

export function hasMethodOverrideParameter(search: string): boolean {
  if (search.length < 2 || !MIGHT_OVERRIDE.test(search)) return false;
  for (const pair of search.slice(1).split(/[&;]/)) {
    const equals = pair.indexOf('=');
    if (readsAsMethodOverride(equals === -1 ? pair : pair.slice(0, equals))) return true;
  }
  return false;
}

/** The name reads as `_method` to some framework (case, escapes, PHP's name rules). */
export function readsAsMethodOverride(rawName: string): boolean {
  let name = rawName.replaceAll('+', ' ');
  for (let round = 0; round < MAX_DECODE_ROUNDS && name.includes('%'); round += 1) {
    name = decodeLeniently(name);
  }
  name = name.replace(/^[\s\0]+/, '').toLowerCase();
  const cut = name.search(/[[\0]/);
  if (cut !== -1) name = name.slice(0, cut);
  return name.replace(/[ .]/g, '_') === '_method';
}

/** Percent-decodes what is well formed and keeps the rest, as query parsers do. */
function decodeLeniently(text: string): string {
  return text.replace(/(?:%[0-9A-Fa-f]{2})+/g, (escapes) => {
    try {
      return decodeURIComponent(escapes);
    } catch {
      return escapes.replace(/%([0-9A-Fa-f]{2})/g, (_match, hex: string) =>
        String.fromCharCode(Number.parseInt(hex, 16)),
      );
    }
  });
}
