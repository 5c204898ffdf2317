/**
 * Arbitraries shared by the path properties: hostile request targets built from the pieces
 * that path-confusion attacks are made of, and different spellings of one canonical path
 * (escaped unreserved characters, either hex case, `//`, `./`, `x/../`).
 */
import fc from 'fast-check';

/** `arbitrary`'s value once in `oneIn` runs, else ''. */
const sometimes = (arbitrary: fc.Arbitrary<string>, oneIn: number) =>
  fc.oneof({ weight: oneIn - 1, arbitrary: fc.constant('') }, { weight: 1, arbitrary });

const hex = (byte: number, upper: boolean) => {
  const digits = byte.toString(16).padStart(2, '0');
  return upper ? digits.toUpperCase() : digits;
};

export const percentEncode = (text: string, upper: boolean) =>
  [...Buffer.from(text, 'utf8')].map((byte) => `%${hex(byte, upper)}`).join('');

// eslint-disable-next-line no-control-regex -- "contains an ASCII character" is the point
const ASCII = /[\x00-\x7f]/;

/**
 * PRODUCT.md "Routing": a non-ASCII character whose upper- or lower-case form contains an
 * ASCII character (U+0131 ı → I, U+0130 İ → i̇, U+017F ſ → S, U+212A K → k, ß → SS, the
 * ligatures ﬀ → FF, …). Java's `equalsIgnoreCase` and .NET's `OrdinalIgnoreCase` read them
 * as ASCII letters.
 */
export function isCaseFoldingTrap(char: string): boolean {
  return (
    (char.codePointAt(0) ?? 0) > 0x7f &&
    (ASCII.test(char.toUpperCase()) || ASCII.test(char.toLowerCase()))
  );
}

/**
 * A non-ASCII character that Unicode compatibility normalisation (NFKC), then perhaps case
 * mapping, turns into ASCII: fullwidth `．` `／` `Ａ`, superscript `⁰`, `ℌ`, … An NFKC-normalising
 * framework reads `／．．／` as `/../`. Not in PRODUCT.md's wording; src/policy/normalize-path.ts
 * refuses these too.
 */
export function isCompatibilityTrap(char: string): boolean {
  const compatible = char.normalize('NFKC');
  return (
    (char.codePointAt(0) ?? 0) > 0x7f &&
    !isCaseFoldingTrap(char) &&
    (ASCII.test(compatible) ||
      ASCII.test(compatible.toUpperCase()) ||
      ASCII.test(compatible.toLowerCase()))
  );
}

/** Both sets, computed from their definitions rather than listed, so none is forgotten. */
const [CASE_FOLDING_TRAPS, COMPATIBILITY_TRAPS] = (() => {
  const caseFolding: string[] = [];
  const compatibility: string[] = [];
  for (let codePoint = 0x80; codePoint <= 0x10ffff; codePoint += 1) {
    if (codePoint >= 0xd800 && codePoint <= 0xdfff) continue;
    const char = String.fromCodePoint(codePoint);
    if (isCaseFoldingTrap(char)) caseFolding.push(char);
    else if (isCompatibilityTrap(char)) compatibility.push(char);
  }
  return [caseFolding, compatibility];
})();

/** One character, escaped as UTF-8 bytes with random hex case. */
const escapedChar = (chars: fc.Arbitrary<string>) =>
  fc.tuple(chars, fc.boolean()).map(([char, upper]) => percentEncode(char, upper));

const byteEscape = fc
  .tuple(fc.integer({ min: 0, max: 255 }), fc.boolean())
  .map(([byte, upper]) => `%${hex(byte, upper)}`);

const oneChar = fc.string({ unit: 'binary', minLength: 1, maxLength: 1 });

/** Pieces a normaliser should accept on their own: letters, dot-segments, harmless escapes. */
const benignPiece = fc.oneof(
  { weight: 8, arbitrary: fc.stringMatching(/^[A-Za-z0-9]{1,4}$/) },
  { weight: 3, arbitrary: fc.constantFrom('.', '..', '') },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      '%2e',
      '%2E',
      '%2e%2e',
      '%41',
      '%7e',
      '%5F',
      '%2d',
      '%20',
      '%3F',
      '%23',
      '%25',
      '%c3%a9',
    ),
  },
  { weight: 1, arbitrary: byteEscape.filter((escape) => /^%[2-7]/.test(escape)) },
  { weight: 2, arbitrary: escapedChar(oneChar) },
  { weight: 2, arbitrary: fc.constantFrom(...'~-_@:!$&\'()*+,="<|') },
);

/** Pieces of the path-confusion tricks, each of which should be refused or neutralised. */
const trickyPiece = fc.oneof(
  { weight: 2, arbitrary: byteEscape },
  {
    weight: 4,
    arbitrary: fc.constantFrom(
      '%2F',
      '%2f',
      '%5C',
      '%5c',
      '%252e',
      '%252F',
      '%2541',
      '%25%32%65',
      '%3B',
      '%3b',
      ';',
      ';x=1',
      '\\',
      '%',
      '%z',
      '%2',
      '%C0%AE',
      '%E0%80%AE',
      '%ED%A0%80',
      '%F4%90%80%80',
      '%EF%BC%8F',
    ),
  },
  { weight: 3, arbitrary: escapedChar(fc.constantFrom(...CASE_FOLDING_TRAPS)) },
  { weight: 2, arbitrary: escapedChar(fc.constantFrom(...COMPATIBILITY_TRAPS)) },
  { weight: 1, arbitrary: oneChar },
  { weight: 1, arbitrary: fc.constantFrom(...CASE_FOLDING_TRAPS) },
);

/** The pieces a hostile path segment is made of: mostly benign, so a trick can hide among them. */
const pathPiece = fc.oneof(
  { weight: 14, arbitrary: benignPiece },
  { weight: 2, arbitrary: trickyPiece },
);

const pathSegment = fc.array(pathPiece, { maxLength: 4 }).map((pieces) => pieces.join(''));

export const hostilePath = fc
  .array(pathSegment, { minLength: 1, maxLength: 6 })
  .map((segments) => `/${segments.join('/')}`);

const queryPiece = fc.oneof(
  { weight: 4, arbitrary: fc.stringMatching(/^[a-z0-9]{1,4}=[a-z0-9%]{0,4}$/) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      '_method=DELETE',
      '_METHOD=put',
      '_Method',
      '%5Fmethod=DELETE',
      '%5fMETHOD=patch',
      'x_method=1',
      '_methods=1',
      '_method_=1',
      '//',
      '%2F..%2F',
      '?',
      '',
    ),
  },
  { weight: 1, arbitrary: fc.string({ unit: 'binary-ascii', maxLength: 4 }) },
);

const query = fc
  .array(queryPiece, { minLength: 0, maxLength: 3 })
  .chain((pieces) => fc.constantFrom('&', ';').map((separator) => `?${pieces.join(separator)}`));

const absolutePrefix = fc.constantFrom(
  'http://host',
  'HTTPS://api.example:8443',
  'http://user@h',
  'http://',
  'ftp://host',
  '*',
  'host',
);

/** Request targets: hostile origin-form mostly, absolute-form, queries, fragments, garbage. */
export const hostileTarget = fc.oneof(
  {
    weight: 24,
    arbitrary: fc
      .tuple(
        sometimes(absolutePrefix, 4),
        hostilePath,
        sometimes(query, 2),
        sometimes(fc.constantFrom('#', '#frag', '#/../admin'), 8),
      )
      .map((parts) => parts.join('')),
  },
  { weight: 1, arbitrary: fc.string({ unit: 'binary-ascii', maxLength: 30 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) },
  { weight: 1, arbitrary: fc.string({ maxLength: 30 }).map((rest) => `/${rest}`) },
);

// ----- spellings of one canonical path -----

const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

/** Characters of canonical segments: unreserved, sub-delims and `:@` (never `;`). */
const canonicalChar = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'),
  },
  { weight: 2, arbitrary: fc.constantFrom(...'-._~') },
  { weight: 1, arbitrary: fc.constantFrom(...":@!$&'()*+,=") },
  {
    // Escapes that stay escaped: space, `?`, `#`, `"`, …, and non-ASCII that reads as nothing else.
    weight: 2,
    arbitrary: fc
      .oneof(
        fc.constantFrom(
          ' ',
          '?',
          '#',
          '"',
          '<',
          '>',
          '[',
          ']',
          '^',
          '`',
          '{',
          '|',
          '}',
          'é',
          'Ω',
          '中',
          '😀',
        ),
        oneChar.filter(
          (char) =>
            char.codePointAt(0)! > 0x7f &&
            !isCaseFoldingTrap(char) &&
            !isCompatibilityTrap(char) &&
            !/[\p{Cs}]/u.test(char),
        ),
      )
      .map((char) => percentEncode(char, true)),
  },
);

/**
 * A canonical segment: never empty in the middle, never ending in `.` or a space (some
 * servers trim those, so the contract refuses them — `.` and `..` included).
 */
export const canonicalSegment = fc
  .array(canonicalChar, { minLength: 1, maxLength: 6 })
  .map((chars) => chars.join(''))
  .filter((segment) => !segment.endsWith('.') && !segment.endsWith('%20'));

/** Segments of a canonical path; a last `''` is a trailing slash, `['']` is `/`. */
export const canonicalSegments = fc
  .tuple(fc.array(canonicalSegment, { maxLength: 5 }), fc.boolean())
  .map(([segments, trailingSlash]) =>
    trailingSlash || segments.length === 0 ? [...segments, ''] : segments,
  );

export const joinSegments = (segments: readonly string[]) => `/${segments.join('/')}`;

/** Each unit of a canonical segment (a character or a whole `%XX…` escape). */
const units = (segment: string) => segment.match(/%[0-9A-F]{2}|[^%]/g) ?? [];

/** One unit spelled another way: an unreserved character escaped, hex in either case, case changed. */
const unitSpelling = (unit: string, changeCase: boolean): fc.Arbitrary<string> => {
  if (unit.startsWith('%')) return fc.constantFrom(unit, unit.toLowerCase());
  const spellings = [unit];
  if (UNRESERVED.test(unit)) spellings.push(percentEncode(unit, true), percentEncode(unit, false));
  if (changeCase && unit.toUpperCase() !== unit.toLowerCase()) {
    const other = unit === unit.toUpperCase() ? unit.toLowerCase() : unit.toUpperCase();
    spellings.push(other, percentEncode(other, false));
  }
  return fc.constantFrom(...spellings);
};

const segmentSpelling = (segment: string, changeCase: boolean) =>
  fc
    .tuple(...units(segment).map((unit) => unitSpelling(unit, changeCase)))
    .map((spelled) => spelled.join(''));

/** What may stand before a segment without changing the path: `./`, `x/../`, an extra `/`. */
const detour = fc
  .array(fc.constantFrom('./', '%2e/', '%2E/', 'x/../', 'zz/%2e%2e/', 'q/.%2E/', 'q/%2E./', '/'), {
    maxLength: 2,
  })
  .map((parts) => parts.join(''));

/** A trailing slash may also be spelled `/.` or `/x/..`. */
const trailingSlashSpelling = fc.constantFrom('', '.', '%2e', 'x/..', 'x/%2E%2e');

/**
 * Another spelling of `joinSegments(segments)` that must normalise to the same path.
 * `changeCase` also changes letters' case: the same path for case-insensitive matching only.
 */
export const respelling = (segments: readonly string[], changeCase: boolean) =>
  fc
    .tuple(
      sometimes(fc.constantFrom('http://host', 'https://Host:8443'), 3),
      ...segments.map((segment, index) =>
        fc
          .tuple(
            detour,
            segment === '' && index === segments.length - 1
              ? trailingSlashSpelling
              : segmentSpelling(segment, changeCase),
          )
          .map(([before, spelled]) => `/${before}${spelled}`),
      ),
    )
    .map((parts) => parts.join(''));
