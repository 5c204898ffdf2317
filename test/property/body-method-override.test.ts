/**
 * The form-body method-override scanner (red-team findings on issue 7: Rails reads `_method`
 * from the body only; then, the gateway read "is this a form, how is it framed" more strictly
 * than the backends do). Properties: a form without an override streams through byte for
 * byte however it is chunked and however leniently its content type is written; an override
 * is found however it is chunked, spelt or placed, and the bytes completing its name are never
 * passed on; a form the scanner cannot read as every backend reads it (a coding, a charset
 * that is not ASCII-compatible, a boundary parsers disagree on) is refused before any byte.
 */
import { Readable } from 'node:stream';
import test from 'ava';
import fc from 'fast-check';
import {
  createBodyOverrideScanner,
  MAX_FIELD_NAME_BYTES,
} from '../../src/policy/body-method-override.js';

const FORM = 'application/x-www-form-urlencoded';
const BOUNDARY = '----tg1234';

/**
 * Feeds `body` in the given chunk sizes to the scanner a POST with these headers gets (the
 * body's Content-Length added unless a Transfer-Encoding is given); resolves with what came
 * out and whether it refused.
 */
async function scan(headers: Record<string, string>, body: Buffer, sizes: number[]) {
  const framing = 'transfer-encoding' in headers ? {} : { 'content-length': String(body.length) };
  const scanner = createBodyOverrideScanner('POST', { ...framing, ...headers });
  if (!scanner) throw new Error('no scanner');
  const chunks: Buffer[] = [];
  let offset = 0;
  for (const size of sizes) {
    if (offset >= body.length) break;
    chunks.push(body.subarray(offset, offset + Math.max(1, size)));
    offset += Math.max(1, size);
  }
  if (offset < body.length) chunks.push(body.subarray(offset));
  const out: Buffer[] = [];
  scanner.on('data', (chunk: Buffer) => out.push(chunk));
  const refused = await new Promise<boolean>((resolve) => {
    scanner.once('error', () => resolve(true));
    scanner.once('end', () => resolve(false));
    Readable.from(chunks).pipe(scanner);
  });
  return { refused, out: Buffer.concat(out) };
}

/** `text` with the case of each letter chosen at random. */
const anyCase = (text: string) =>
  fc
    .array(fc.boolean(), { minLength: text.length, maxLength: text.length })
    .map((upper) =>
      [...text].map((char, index) => (upper[index] ? char.toUpperCase() : char)).join(''),
    );

/** Content-Type headers some backend reads as a urlencoded form (none at all included). */
const urlencodedHeaders: fc.Arbitrary<Record<string, string>> = fc.oneof(
  fc.constant({}),
  fc.constant({ 'content-type': '' }),
  fc
    .tuple(
      anyCase(FORM),
      fc.constantFrom(
        '',
        ';',
        ',',
        '; charset=utf-8',
        ';charset="UTF-8"',
        ', charset=utf-8',
        ' ; charset=ISO-8859-1',
        '; CHARSET=us-ascii',
        ' x',
        '\tjunk',
        ',text/plain',
        '; boundary=x',
      ),
    )
    .map(([type, rest]) => ({ 'content-type': `${type}${rest}` })),
);

/** Boundaries as clients write them: Chrome's and Firefox's hold the word `boundary` itself. */
const TOKEN_BOUNDARIES = [
  BOUNDARY,
  '----WebKitFormBoundary7MA4YWxkTrZu0gW',
  '----geckoformboundary9d3f2c1b6a',
  '--------------------------848123041234567890123456',
  'XyZ',
];
/** JavaMail's needs quotes (`=` is no token character). */
const QUOTED_BOUNDARIES = ['----=_Part_0_1234.5678', "a'b(c)+_-./:?=x"];

/** Multipart Content-Type headers every parser reads with the same boundary, and that boundary. */
const multipart: fc.Arbitrary<{ headers: Record<string, string>; boundary: string }> = fc
  .tuple(
    anyCase('multipart/'),
    fc.constantFrom('form-data', 'mixed', 'related', 'alternative', 'x-custom'),
    fc.oneof(
      fc.tuple(fc.constantFrom(...TOKEN_BOUNDARIES), fc.boolean()),
      fc.tuple(fc.constantFrom(...QUOTED_BOUNDARIES), fc.constant(true)),
    ),
    fc.constantFrom(
      (value: string) => `; boundary=${value}`,
      (value: string) => `;boundary=${value}`,
      (value: string) => `; charset=utf-8; boundary=${value}`,
      (value: string) => `; boundary=${value}; charset=UTF-8`,
      (value: string) => `; boundary=${value};`,
      (value: string) => `; type="text/plain"; boundary=${value}`,
    ),
  )
  .map(([prefix, subtype, [boundary, quoted], parameters]) => ({
    headers: {
      'content-type': `${prefix}${subtype}${parameters(quoted ? `"${boundary}"` : boundary)}`,
    },
    boundary,
  }));
const multipartHeaders = multipart.map(({ headers }) => headers);

const fieldName = fc
  .stringMatching(/^[a-z][a-z0-9_]{0,10}$/)
  .filter((name) => !/method/.test(name));
const fieldValue = fc.string({ maxLength: 40 }).map((value) => encodeURIComponent(value));
const form = fc.array(fc.tuple(fieldName, fieldValue), { maxLength: 8 });
const sizes = fc.array(fc.integer({ min: 1, max: 17 }), { maxLength: 40 });
const overrideName = fc.constantFrom(
  '_method',
  '_METHOD',
  '%5Fmethod',
  '_meth%6Fd',
  '+_method',
  '.method',
  '_method%5B%5D',
  // Rack 2 and qs drop leading brackets and end the name at `]`.
  '[_method]',
  '_method]',
  '%5B_method%5D',
  ']]_method',
);

test('a urlencoded form, however its type is spelt, streams through unless it overrides', async (t) => {
  await fc.assert(
    fc.asyncProperty(
      urlencodedHeaders,
      form,
      fc.option(overrideName),
      fc.nat(),
      sizes,
      async (headers, fields, override, at, chunking) => {
        const pairs = fields.map(([field, value]) => `${field}=${value}`);
        if (override !== null) pairs.splice(at % (pairs.length + 1), 0, `${override}=DELETE`);
        const body = Buffer.from(pairs.join('&'));
        if (body.length === 0) return true; // no body: nothing to scan (see the table below)
        const { refused, out } = await scan(headers, body, chunking);
        if (override === null) return !refused && out.equals(body);
        return refused && !out.toString('latin1').includes(`${override}=`);
      },
    ),
    { numRuns: 400 },
  );
  t.pass();
});

const part = (headerLine: string, value: string, boundary = BOUNDARY) =>
  `--${boundary}\r\n${headerLine}\r\n\r\n${value}\r\n`;

const overridingPartHeader = fc.constantFrom(
  'Content-Disposition: form-data; name="_method"',
  'Content-Disposition: form-data; name=_method',
  'Content-Disposition: form-data; name="_METHOD"',
  "Content-Disposition: form-data; name*=UTF-8''%5Fmethod",
  'Content-Disposition: form-data; name="\\_method"',
  'Content-Disposition: form-data; filename="x"; name="_method"',
  // PHP: single quotes, and an unquoted value ends at a blank.
  "Content-Disposition: form-data; name='_method'",
  'Content-Disposition: form-data; name=_method x',
  // Rack 2 and busboy end an unquoted value at the first non-token character.
  'Content-Disposition: form-data; name=_method,x',
  'Content-Disposition: form-data; name="[_method]"',
  // Tomcat (commons-fileupload's parameter parser) decodes RFC 2047 words.
  'Content-Disposition: form-data; name="=?UTF-8?B?X21ldGhvZA==?="',
  'Content-Disposition: form-data; name="=?utf-8?Q?=5Fmethod?="',
  'Content-Disposition: form-data; name="=?UTF-16BE?B?AF8AbQBlAHQAaABvAGQ=?="',
  "Content-Disposition: form-data; name*=UTF-16BE''%00_%00m%00e%00t%00h%00o%00d",
  'Content-Disposition: form-data; name*0="_me"; name*1="thod"',
  'Content-Disposition: form-data;\r\n name="_method"',
  // Rack names a part without a disposition name by its Content-ID.
  'Content-ID: _method',
);

test('a multipart form of any subtype streams through unless a part overrides', async (t) => {
  await fc.assert(
    fc.asyncProperty(
      multipart,
      fc.array(fc.tuple(fieldName, fc.string({ maxLength: 60 })), { maxLength: 5 }),
      fc.option(overridingPartHeader),
      fc.nat(),
      sizes,
      async ({ headers, boundary }, parts, override, at, chunking) => {
        const rendered = parts.map(([name, value]) =>
          part(`Content-Disposition: form-data; name="${name}"`, value, boundary),
        );
        if (override !== null) {
          rendered.splice(at % (rendered.length + 1), 0, part(override, 'PUT', boundary));
        }
        const body = Buffer.from(`${rendered.join('')}--${boundary}--\r\n`);
        const { refused, out } = await scan(headers, body, chunking);
        if (override === null) return !refused && out.equals(body);
        return refused && !out.toString('latin1').includes(`${override}\r\n`);
      },
    ),
    { numRuns: 400 },
  );
  t.pass();
});

/** A harmless body matching the headers' kind of form. */
const harmlessBody = (headers: Record<string, string>) =>
  Buffer.from(
    /multipart/i.test(headers['content-type'] ?? '')
      ? `${part('Content-Disposition: form-data; name="a"', '1')}--${BOUNDARY}--\r\n`
      : 'a=1&b=2',
  );

const unreadableCoding = fc.oneof(
  fc
    .constantFrom('gzip', 'deflate', 'br', 'x-gzip', 'GZIP', 'identity, gzip', 'gzip, identity')
    .map((coding) => ({ 'content-encoding': coding })),
  fc
    .constantFrom('gzip, chunked', 'deflate, chunked', 'compress, chunked')
    .map((coding) => ({ 'transfer-encoding': coding })),
);

const unreadableCharset = fc.constantFrom(
  '; charset=UTF-16',
  '; charset=utf-16be',
  '; charset=UTF-16LE',
  '; charset=utf-32',
  '; charset=UTF-7',
  '; charset=IBM037',
  '; charset=Shift_JIS',
  '; charset="utf-16"',
  '; charset=',
  '; CHARSET = UTF-16',
  "; charset*=utf-8''utf-16",
  '; foo="charset=utf-16"',
  '; charset=utf-8; charset=utf-16',
  '; charset=utf-8x',
);

test('a form behind a content or transfer coding is refused before any byte passes', async (t) => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(urlencodedHeaders, multipartHeaders),
      unreadableCoding,
      sizes,
      async (headers, coding, chunking) => {
        const body = harmlessBody(headers);
        const { refused, out } = await scan({ ...headers, ...coding }, body, chunking);
        return refused && out.length === 0;
      },
    ),
    { numRuns: 200 },
  );
  t.pass();
});

test('a form in a charset that is not ASCII-compatible is refused before any byte passes', async (t) => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(urlencodedHeaders, multipartHeaders),
      unreadableCharset,
      sizes,
      async (headers, charset, chunking) => {
        const body = harmlessBody(headers);
        const type = `${headers['content-type'] ?? FORM}${charset}`;
        const { refused, out } = await scan({ 'content-type': type }, body, chunking);
        return refused && out.length === 0;
      },
    ),
    { numRuns: 200 },
  );
  t.pass();
});

const B = BOUNDARY;
const AMBIGUOUS_MULTIPART_TYPES = [
  'multipart/form-data',
  `multipart/form-data, boundary=${B}`,
  `multipart/form-data; boundary=${B},junk`,
  `multipart/form-data; boundary=${B}"`,
  `multipart/form-data; boundary="${B}`,
  `multipart/form-data; boundary=${B}; boundary=other`,
  `multipart/form-data; boundary=${B}; BOUNDARY=${B}`,
  'multipart/form-data; boundary=',
  'multipart/form-data; boundary=""',
  'multipart/form-data; boundary="a b"',
  `multipart/form-data; boundary=${B} ;x=y`,
  `multipart/form-data; xboundary=${B}`,
  `multipart/form-data; boundary*=utf-8''${B}`,
  `multipart/form-data; boundary="=?utf-8?q?${B}?="`,
  `multipart/form-data x; boundary=${B}`,
  `multipart/form-data; boundary=${B}\\`,
  `multipart/form-data; charset=utf-8 boundary=${B}`,
  `multipart/form-data; boundary="${'x'.repeat(71)}"`,
  `multipart/form-data; boundary=${B}; x`,
  `multipart/form-data; boundary = ${B}`,
  `multipart/mixed; boundary=${B}, boundary=x`,
  `multipart/förm-data; boundary=${B}`,
  // Rack's last `boundary=` must be the parameter.
  'multipart/form-data; boundary=a-boundary=b',
];
/** PHP's first `boundary` (case-sensitive, else in any case) must be the parameter: as written. */
const PHP_MISREAD_MULTIPART_TYPES = [
  'multipart/form-data; BOUNDARY=----geckoformboundary9d3f; charset=utf-8',
  `multipart/form-data; foo="boundary"; boundary=${B}`,
  `multipart/boundary; boundary=${B}`,
];

test('a multipart boundary that parsers could read differently is refused before any byte', async (t) => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.constantFrom(...AMBIGUOUS_MULTIPART_TYPES).chain((type) => anyCase(type)),
        fc.constantFrom(...PHP_MISREAD_MULTIPART_TYPES),
      ),
      sizes,
      async (type, chunking) => {
        const body = harmlessBody({ 'content-type': 'multipart/form-data' });
        const { refused, out } = await scan({ 'content-type': type }, body, chunking);
        return refused && out.length === 0;
      },
    ),
    { numRuns: 200 },
  );
  t.pass();
});

const NOT_SCANNED: Array<[string, string | undefined, Record<string, string>]> = [
  ['a JSON POST', 'POST', { 'content-type': 'application/json', 'content-length': '20' }],
  ['a text/plain POST', 'POST', { 'content-type': 'text/plain', 'content-length': '20' }],
  ['a longer media type', 'POST', { 'content-type': `${FORM}x`, 'content-length': '20' }],
  ['"multipart" alone', 'POST', { 'content-type': 'multipart', 'content-length': '20' }],
  [
    'a form type named in a parameter',
    'POST',
    { 'content-type': `application/json; x=${FORM}`, 'content-length': '20' },
  ],
  ['a PUT form', 'PUT', { 'content-type': FORM, 'content-length': '20' }],
  ['a GET', 'GET', {}],
  ['a form POST without a body', 'POST', { 'content-type': FORM, 'content-length': '0' }],
  ['a POST without a type or a body', 'POST', {}],
  [
    'a gzipped JSON POST',
    'POST',
    {
      'content-type': 'application/json',
      'content-encoding': 'gzip',
      'transfer-encoding': 'chunked',
    },
  ],
];

for (const [what, method, headers] of NOT_SCANNED) {
  test(`not scanned: ${what}`, (t) => {
    t.is(createBodyOverrideScanner(method, headers), null);
  });
}

test('a POST with a body and no media type is scanned as a form (Rack reads it as one)', async (t) => {
  t.not(createBodyOverrideScanner('POST', { 'transfer-encoding': 'chunked' }), null);
  const { refused } = await scan({}, Buffer.from('a=1&_method=DELETE'), []);
  t.true(refused);
});

/**
 * Names longer than MAX_FIELD_NAME_BYTES: a body that is no form (JSON or text POSTed without
 * a Content-Type) passes when its first "name" starts plainly, and a name whose beginning
 * could still turn into `_method` — blanks, brackets, NULs or `+` in front, or an escape
 * anywhere — is refused, never passed.
 */
const junk = fc.constantFrom(' ', '\t', '\0', '[', ']', '+', '\u00a0');
test('a long field name passes when its beginning rules out _method, else it is refused', async (t) => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(junk, { maxLength: 30 }),
      fc.stringMatching(/^[a-zA-Z0-9{}":,_. -]{16,64}$/),
      fc.integer({ min: MAX_FIELD_NAME_BYTES + 1, max: 3 * MAX_FIELD_NAME_BYTES }),
      sizes,
      async (front, start, length, chunking) => {
        const plain = `${front.join('')}${start}`;
        const name = plain.padEnd(length, 'x');
        const body = Buffer.from(`${name}=1&a=2`, 'latin1');
        const { refused, out } = await scan({}, body, chunking);
        t.false(refused, JSON.stringify(plain));
        t.true(out.equals(body));
      },
    ),
  );
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        // Nothing but what the readings drop, then `_method`.
        fc
          .array(junk, { minLength: MAX_FIELD_NAME_BYTES + 1, maxLength: 2000 })
          .map((front) => front.join('') + '_method'),
        // Escapes of what the readings drop, then `_method`.
        fc
          .array(fc.constantFrom('%20', '%5B', '%00', '%2520'), { minLength: 400, maxLength: 700 })
          .map((front) => front.join('') + '_method'),
        // `_method` cut by a bracket, padded beyond the limit.
        fc
          .constantFrom('_method[', '[_method]', '_method\0')
          .map((start) => start.padEnd(MAX_FIELD_NAME_BYTES + 10, 'x')),
      ),
      sizes,
      async (name, chunking) => {
        const body = Buffer.from(`${name}=DELETE`, 'latin1');
        const { refused, out } = await scan({}, body, chunking);
        t.true(refused, JSON.stringify(name.slice(0, 40)));
        t.false(out.includes(Buffer.from('=DELETE')));
      },
    ),
  );
});

test('a long name with an escape in its first bytes is refused when it arrives in pieces', async (t) => {
  // `%25` + `5F` is `%5F` is `_`: an escape can combine with bytes not seen yet.
  const name = 'abcdefghijklmnopqrstu%25'.padEnd(MAX_FIELD_NAME_BYTES + 100, 'x');
  const { refused } = await scan({}, Buffer.from(`${name}=1`), [MAX_FIELD_NAME_BYTES + 10]);
  t.true(refused);
  // Whole, the same name is read to its end and is harmless.
  t.false((await scan({}, Buffer.from(`${name}=1`), [])).refused);
});
