/**
 * The form-body method-override scanner (red-team finding on issue 7: Rails reads `_method`
 * from the body only). Properties: a form without an override streams through byte for byte
 * however it is chunked; an override is found however it is chunked, spelt or placed, and
 * the bytes completing its name are never passed on.
 */
import { Readable } from 'node:stream';
import test from 'ava';
import fc from 'fast-check';
import { createBodyOverrideScanner } from '../../src/policy/body-method-override.js';

const FORM = 'application/x-www-form-urlencoded';
const MULTIPART = 'multipart/form-data; boundary=----tg1234';

/** Feeds `body` in the given chunk sizes; resolves with what came out and whether it refused. */
async function scan(contentType: string, body: Buffer, sizes: number[]) {
  const scanner = createBodyOverrideScanner('POST', contentType);
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
);

test('a form without an override streams through unchanged, however chunked', async (t) => {
  await fc.assert(
    fc.asyncProperty(form, sizes, async (fields, chunking) => {
      const body = Buffer.from(fields.map(([name, value]) => `${name}=${value}`).join('&'));
      const { refused, out } = await scan(FORM, body, chunking);
      return !refused && out.equals(body);
    }),
    { numRuns: 300 },
  );
  t.pass();
});

test('an override anywhere in a form is refused before its name is passed on', async (t) => {
  await fc.assert(
    fc.asyncProperty(form, fc.nat(), overrideName, sizes, async (fields, at, name, chunking) => {
      const pairs = fields.map(([field, value]) => `${field}=${value}`);
      pairs.splice(at % (pairs.length + 1), 0, `${name}=DELETE`);
      const body = Buffer.from(pairs.join('&'));
      const { refused, out } = await scan(FORM, body, chunking);
      const text = out.toString('latin1');
      return refused && !text.includes(`${name}=`);
    }),
    { numRuns: 300 },
  );
  t.pass();
});

const part = (nameParameter: string, value: string) =>
  `------tg1234\r\nContent-Disposition: form-data; ${nameParameter}\r\n\r\n${value}\r\n`;

test('multipart: parts stream through unchanged; a _method part is refused, however chunked', async (t) => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.tuple(fieldName, fc.string({ maxLength: 60 })), { maxLength: 5 }),
      fc.option(
        fc.constantFrom(
          'name="_method"',
          'name=_method',
          'name="_METHOD"',
          "name*=UTF-8''%5Fmethod",
          'name="\\_method"',
          'filename="x"; name="_method"',
        ),
      ),
      fc.nat(),
      sizes,
      async (parts, override, at, chunking) => {
        const rendered = parts.map(([name, value]) => part(`name="${name}"`, value));
        if (override !== null)
          rendered.splice(at % (rendered.length + 1), 0, part(override, 'PUT'));
        const body = Buffer.from(`${rendered.join('')}------tg1234--\r\n`);
        const { refused, out } = await scan(MULTIPART, body, chunking);
        if (override === null) return !refused && out.equals(body);
        return refused && !out.toString('latin1').includes(`${override}\r\n`);
      },
    ),
    { numRuns: 300 },
  );
  t.pass();
});

test('other content types and methods are not scanned; a boundary-less multipart is refused', async (t) => {
  t.is(createBodyOverrideScanner('POST', 'application/json'), null);
  t.is(createBodyOverrideScanner('PUT', FORM), null);
  t.is(createBodyOverrideScanner('POST', undefined), null);
  const { refused } = await scan('multipart/form-data', Buffer.from('x'), []);
  t.true(refused);
});
