/**
 * Bypasses of the form-body method-override check (src/policy/body-method-override.ts), found
 * by a red-team session: each `POST /public/x` carrying `_method=DELETE` reached the upstream
 * intact because the gateway decided "is this a form, and how is it framed" more strictly than
 * the most lenient backend (Rack, PHP, Tomcat, Express's body-parser). Every row is sent as raw
 * bytes through a real gateway to the real echo upstream, tagged; a refusal must be a 400 whose
 * request the upstream never executed, and everything that is not an override must still
 * arrive byte for byte.
 */
import { createHash, randomUUID } from 'node:crypto';
import { deflateSync, gzipSync } from 'node:zlib';
import test from 'ava';
import type { RecordedRequest } from '../../src/dev/echo-api.js';
import { startHarness, type Harness } from '../_harness.js';
import { converse, exchange } from './_attack.js';

interface Row {
  what: string;
  /** Which backend reads it as a form (or why it must still pass). */
  why: string;
  method?: string;
  /** Header lines besides Host, the tag and the framing. */
  headers: string[];
  body: Buffer;
  /** Send the body chunked (in two chunks) instead of with a Content-Length. */
  chunked?: boolean;
  status: 200 | 400;
}

const override = Buffer.from('_method=DELETE');
const multipartOverride = (boundary: string) =>
  Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--${boundary}--\r\n`,
  );
const utf16be = (text: string) => Buffer.from(text, 'utf16le').swap16();
const partWith = (headerLine: string) =>
  Buffer.from(`--XyZ\r\n${headerLine}\r\n\r\nDELETE\r\n--XyZ--\r\n`);

const REFUSED: Row[] = [
  // ── the red-team findings ──
  {
    what: 'no Content-Type',
    why: "Rack's form_data? reads a POST without a media type as a form",
    headers: [],
    body: override,
    status: 400,
  },
  {
    what: 'an empty Content-Type',
    why: 'Rack: an empty media type is no media type',
    headers: ['Content-Type: '],
    body: override,
    status: 400,
  },
  {
    what: 'no Content-Type, chunked',
    why: "Rack's form_data?",
    headers: [],
    body: override,
    chunked: true,
    status: 400,
  },
  {
    what: 'application/x-www-form-urlencoded, charset=utf-8',
    why: 'Rack splits the content type on `;` and `,`',
    headers: ['Content-Type: application/x-www-form-urlencoded, charset=utf-8'],
    body: override,
    status: 400,
  },
  {
    what: 'application/x-www-form-urlencoded x',
    why: 'PHP cuts the content type at `;`, `,` or a space',
    headers: ['Content-Type: application/x-www-form-urlencoded x'],
    body: override,
    status: 400,
  },
  {
    what: 'multipart/mixed',
    why: 'Rack parses multipart/mixed as a form',
    headers: ['Content-Type: multipart/mixed; boundary=XyZ'],
    body: multipartOverride('XyZ'),
    status: 400,
  },
  {
    what: 'multipart/related',
    why: 'Rack parses multipart/related as a form',
    headers: ['Content-Type: multipart/related; boundary=XyZ'],
    body: multipartOverride('XyZ'),
    status: 400,
  },
  {
    what: 'multipart/form-data, boundary=XyZ',
    why: 'Rack and PHP find the boundary after a `,`',
    headers: ['Content-Type: multipart/form-data, boundary=XyZ'],
    body: multipartOverride('XyZ'),
    status: 400,
  },
  {
    what: 'boundary=XyZ,junk',
    why: 'Rack and PHP end the boundary at `,`',
    headers: ['Content-Type: multipart/form-data; boundary=XyZ,junk'],
    body: multipartOverride('XyZ'),
    status: 400,
  },
  {
    what: 'boundary=XyZ"',
    why: 'Rack ends the boundary at `"`',
    headers: ['Content-Type: multipart/form-data; boundary=XyZ"'],
    body: multipartOverride('XyZ'),
    status: 400,
  },
  {
    what: 'Content-Encoding: gzip',
    why: "Express's body-parser inflates gzip",
    headers: ['Content-Type: application/x-www-form-urlencoded', 'Content-Encoding: gzip'],
    body: gzipSync(override),
    status: 400,
  },
  {
    what: 'Content-Encoding: deflate',
    why: "Express's body-parser inflates deflate",
    headers: ['Content-Type: application/x-www-form-urlencoded', 'Content-Encoding: deflate'],
    body: deflateSync(override),
    status: 400,
  },
  {
    what: 'charset=UTF-16BE',
    why: "Tomcat's Parameters decode the form in its charset; Spring reads it",
    headers: ['Content-Type: application/x-www-form-urlencoded; charset=UTF-16BE'],
    body: utf16be('_method=DELETE'),
    status: 400,
  },
  {
    what: 'charset=UTF-16BE, `=` as one byte',
    why: 'Tomcat 10 splits on the bytes `&` and `=`, then decodes: getParameter("_method") is DELETE',
    headers: ['Content-Type: application/x-www-form-urlencoded; charset=UTF-16BE'],
    body: Buffer.concat([utf16be('_method'), Buffer.from('='), utf16be('DELETE')]),
    status: 400,
  },
  // ── neighbours ──
  {
    what: 'an upper-case media type',
    why: 'media types are case-insensitive everywhere',
    headers: ['Content-Type: APPLICATION/X-WWW-FORM-URLENCODED'],
    body: override,
    status: 400,
  },
  {
    what: 'a tab after the media type',
    why: 'a blank ends the media type for PHP',
    headers: ['Content-Type: application/x-www-form-urlencoded\tjunk'],
    body: override,
    status: 400,
  },
  {
    what: 'no Content-Type, gzipped',
    why: 'a form to Rack, and unreadable to the scanner',
    headers: ['Content-Encoding: gzip'],
    body: gzipSync(override),
    status: 400,
  },
  {
    what: 'Content-Encoding: br',
    why: 'body-parser 2 inflates brotli',
    headers: ['Content-Type: application/x-www-form-urlencoded', 'Content-Encoding: br'],
    body: override,
    status: 400,
  },
  {
    what: 'Content-Encoding: identity, gzip',
    why: 'a list of codings is still a coding',
    headers: [
      'Content-Type: application/x-www-form-urlencoded',
      'Content-Encoding: identity',
      'Content-Encoding: gzip',
    ],
    body: gzipSync(override),
    status: 400,
  },
  {
    what: 'a gzipped harmless form',
    why: 'the scanner cannot read it, so it cannot vouch for it',
    headers: ['Content-Type: application/x-www-form-urlencoded', 'Content-Encoding: gzip'],
    body: gzipSync('a=1&b=2'),
    status: 400,
  },
  {
    what: 'charset=UTF-16LE',
    why: 'Tomcat decodes it',
    headers: ['Content-Type: application/x-www-form-urlencoded; charset=UTF-16LE'],
    body: Buffer.from('_method=DELETE', 'utf16le'),
    status: 400,
  },
  {
    what: 'charset="utf-16be" quoted',
    why: 'quotes are stripped by every parameter parser',
    headers: ['Content-Type: application/x-www-form-urlencoded; charset="utf-16be"'],
    body: utf16be('_method=DELETE'),
    status: 400,
  },
  {
    what: 'charset=UTF-16BE on a multipart form',
    why: 'Tomcat decodes part headers, names included, in the request charset',
    headers: ['Content-Type: multipart/form-data; boundary=XyZ; charset=UTF-16BE'],
    body: utf16be(multipartOverride('XyZ').toString('latin1')),
    status: 400,
  },
  {
    what: 'a second boundary parameter',
    why: 'PHP takes the first boundary; Rack and Tomcat 10 the last (getParameter("_method") is DELETE)',
    headers: ['Content-Type: multipart/form-data; boundary=AbC; boundary=XyZ'],
    body: multipartOverride('XyZ'),
    status: 400,
  },
  {
    what: 'a boundary-less multipart form',
    why: 'Rack then reads the body as urlencoded',
    headers: ['Content-Type: multipart/form-data'],
    body: override,
    status: 400,
  },
  {
    what: 'a boundary as an RFC 2047 word',
    why: "Tomcat's parameter parser decodes it; Rack and PHP do not",
    headers: ['Content-Type: multipart/form-data; boundary="=?utf-8?q?XyZ?="'],
    body: multipartOverride('XyZ'),
    status: 400,
  },
  {
    what: '[_method]=DELETE',
    why: 'Rack 2 and qs drop the leading bracket',
    headers: ['Content-Type: application/x-www-form-urlencoded'],
    body: Buffer.from('a=1&[_method]=DELETE'),
    status: 400,
  },
  {
    what: "a part named '_method' in single quotes",
    why: 'PHP reads single-quoted parameters',
    headers: ['Content-Type: multipart/form-data; boundary=XyZ'],
    body: partWith("Content-Disposition: form-data; name='_method'"),
    status: 400,
  },
  {
    what: 'a part named by an RFC 2047 word',
    why: "Tomcat 10's (commons-fileupload's) parameter parser decodes it to _method",
    headers: ['Content-Type: multipart/form-data; boundary=XyZ'],
    body: partWith('Content-Disposition: form-data; name="=?UTF-8?B?X21ldGhvZA==?="'),
    status: 400,
  },
  {
    what: 'a part named in RFC 2231 UTF-16',
    why: 'Tomcat 10 decodes name*= in the charset it names, to _method',
    headers: ['Content-Type: multipart/form-data; boundary=XyZ'],
    body: partWith("Content-Disposition: form-data; name*=UTF-16BE''%00_%00m%00e%00t%00h%00o%00d"),
    status: 400,
  },
  {
    what: 'a part named by its Content-ID',
    why: 'Rack names a part without a disposition name by its Content-ID',
    headers: ['Content-Type: multipart/form-data; boundary=XyZ'],
    body: partWith('Content-ID: _method'),
    status: 400,
  },
];

const webkit = '----WebKitFormBoundary7MA4YWxkTrZu0gW';
const binary = Buffer.from(Array.from({ length: 512 }, (_, index) => (index * 37) % 256));

const PASSED: Row[] = [
  {
    what: 'a urlencoded form',
    why: 'nothing to refuse',
    headers: ['Content-Type: application/x-www-form-urlencoded'],
    body: Buffer.from('a=1&method=2&b_method=3&c=%5Bx%5D'),
    status: 200,
  },
  {
    what: 'a jQuery form (charset=UTF-8)',
    why: 'an ASCII-compatible charset',
    headers: ['Content-Type: application/x-www-form-urlencoded; charset=UTF-8'],
    body: Buffer.from('name=caf%C3%A9&q=x+y'),
    status: 200,
  },
  {
    what: 'a chunked urlencoded form',
    why: 'chunked is the one transfer coding',
    headers: ['Content-Type: application/x-www-form-urlencoded'],
    body: Buffer.from('a=1&b=2&c=3'),
    chunked: true,
    status: 200,
  },
  {
    what: 'a form with Content-Encoding: identity',
    why: 'identity is no coding',
    headers: ['Content-Type: application/x-www-form-urlencoded', 'Content-Encoding: identity'],
    body: Buffer.from('a=1'),
    status: 200,
  },
  {
    what: "a browser's multipart upload",
    why: 'a plain boundary, a binary file',
    headers: [`Content-Type: multipart/form-data; boundary=${webkit}`],
    body: Buffer.concat([
      Buffer.from(
        `--${webkit}\r\nContent-Disposition: form-data; name="title"\r\n\r\nhello\r\n` +
          `--${webkit}\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`,
      ),
      binary,
      Buffer.from(`\r\n--${webkit}--\r\n`),
    ]),
    status: 200,
  },
  {
    what: 'a JavaMail-style quoted boundary',
    why: 'a quoted boundary with `=` and `.`',
    headers: ['Content-Type: multipart/related; boundary="----=_Part_0_1234.5678"; type="a/b"'],
    body: Buffer.from(
      '------=_Part_0_1234.5678\r\nContent-Type: text/plain\r\n\r\nx\r\n------=_Part_0_1234.5678--\r\n',
    ),
    status: 200,
  },
  {
    what: 'JSON mentioning _method',
    why: 'no override reader parses JSON as a form',
    headers: ['Content-Type: application/json'],
    body: Buffer.from('{"_method":"DELETE"}'),
    status: 200,
  },
  {
    what: 'gzipped JSON',
    why: 'only forms are held to the codings rule',
    headers: ['Content-Type: application/json', 'Content-Encoding: gzip'],
    body: gzipSync('{"_method":"DELETE"}'),
    status: 200,
  },
  {
    what: 'text/plain',
    why: 'no override reader parses text/plain as a form',
    headers: ['Content-Type: text/plain'],
    body: override,
    status: 200,
  },
  {
    what: 'a POST without a body or a type (Content-Length: 0)',
    why: 'nothing to read',
    headers: [],
    body: Buffer.alloc(0),
    status: 200,
  },
  {
    what: 'a POST without a type and a harmless body',
    why: 'scanned as a form, and there is nothing to refuse',
    headers: [],
    body: Buffer.from('ping=1'),
    status: 200,
  },
  {
    what: 'a POST without a type and 8 KB of JSON',
    why: 'no `=` for 8 KB: one long "name", whose beginning rules out `_method`',
    headers: [],
    body: Buffer.from(JSON.stringify({ items: Array.from({ length: 400 }, (_, id) => ({ id })) })),
    status: 200,
  },
  {
    what: 'a POST without a type, 2 KB of blanks, then _method',
    why: 'PHP drops leading blanks from a name: it is `_method`',
    headers: [],
    body: Buffer.from(`${' '.repeat(2048)}_method=DELETE`),
    status: 400,
  },
  {
    what: 'a PUT form naming _method',
    why: 'overrides apply to POST only',
    method: 'PUT',
    headers: ['Content-Type: application/x-www-form-urlencoded'],
    body: override,
    status: 200,
  },
];

let harness: Harness;

test.before(async () => {
  harness = await startHarness();
});

test.after.always(async () => {
  await harness?.close();
});

const seenBy = (tag: string): RecordedRequest | undefined =>
  harness.upstream.requests.find((seen) => seen.headers['x-attack-id'] === tag);

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** The request as bytes (latin1 text, one char per byte): the body framed as the row says. */
function render(row: Row, tag: string): string {
  const head = [
    `${row.method ?? 'POST'} /public/x HTTP/1.1`,
    'Host: gateway.test',
    `X-Attack-Id: ${tag}`,
    ...row.headers,
  ];
  const body = row.body.toString('latin1');
  if (!row.chunked) {
    return `${[...head, `Content-Length: ${row.body.length}`].join('\r\n')}\r\n\r\n${body}`;
  }
  const half = Math.ceil(body.length / 2);
  const chunks = [body.slice(0, half), body.slice(half)].filter((chunk) => chunk.length > 0);
  const framed = chunks.map((chunk) => `${chunk.length.toString(16)}\r\n${chunk}\r\n`).join('');
  return `${[...head, 'Transfer-Encoding: chunked'].join('\r\n')}\r\n\r\n${framed}0\r\n\r\n`;
}

for (const row of [...REFUSED, ...PASSED]) {
  test(`${row.method ?? 'POST'} with ${row.what} → ${row.status} (${row.why})`, async (t) => {
    const tag = randomUUID();
    const [reply] = await exchange(harness.port, render(row, tag));
    t.is(reply?.status, row.status, reply?.body);
    // A request is recorded once its body ended; give an aborted one time to show up.
    await new Promise((resolve) => setTimeout(resolve, 150));
    const seen = seenBy(tag);
    if (row.status === 400) {
      t.is(JSON.parse(reply?.body ?? '{}').error, 'invalid_request');
      t.is(seen, undefined, 'the upstream never executed the request');
      return;
    }
    t.truthy(seen, 'the upstream executed the request');
    t.is(seen?.method, row.method ?? 'POST');
    t.is(seen?.bodyBytes, row.body.length);
    t.is(seen?.bodySha256, sha256(row.body), 'the body arrived byte for byte');
    const contentType = row.headers.find((line) => /^content-type:/i.test(line));
    t.is(seen?.headers['content-type'], contentType?.slice('content-type:'.length).trim());
  });
}

test('a POST without a Content-Length or a body passes', async (t) => {
  const tag = randomUUID();
  const text = `POST /public/x HTTP/1.1\r\nHost: gateway.test\r\nX-Attack-Id: ${tag}\r\n\r\n`;
  const [reply] = await exchange(harness.port, text);
  t.is(reply?.status, 200);
  await new Promise((resolve) => setTimeout(resolve, 150));
  t.is(seenBy(tag)?.bodyBytes, 0);
});

test('an unreadable form is refused before its body is sent', async (t) => {
  // The client waits for 100 Continue (sent once the request is authorised) and never sends
  // the body: the refusal does not wait for it.
  const tag = randomUUID();
  const conversation = await converse(harness.port);
  try {
    conversation.write(
      `POST /public/x HTTP/1.1\r\nHost: gateway.test\r\nX-Attack-Id: ${tag}\r\n` +
        'Content-Type: application/x-www-form-urlencoded\r\nContent-Encoding: gzip\r\n' +
        'Expect: 100-continue\r\nContent-Length: 100\r\n\r\n',
    );
    t.true(await conversation.until((received) => / 400 /.test(received), 5000));
  } finally {
    conversation.destroy();
  }
  await new Promise((resolve) => setTimeout(resolve, 150));
  t.is(seenBy(tag), undefined);
});

test('a form behind a transfer coding other than chunked never reaches the upstream', async (t) => {
  const tag = randomUUID();
  const body = '_method=DELETE';
  const text =
    `POST /public/x HTTP/1.1\r\nHost: gateway.test\r\nX-Attack-Id: ${tag}\r\n` +
    'Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: gzip, chunked\r\n\r\n' +
    `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`;
  const [reply] = await exchange(harness.port, text);
  t.is(reply?.status, 400);
  await new Promise((resolve) => setTimeout(resolve, 150));
  t.is(seenBy(tag), undefined);
});

test('the upstream gets the one Content-Type the scanner judged', async (t) => {
  // Node keeps the first of two Content-Type fields, and so must the upstream's request: were
  // the second forwarded too, the upstream could read as a form what was judged text.
  const tag = randomUUID();
  const text =
    `POST /public/x HTTP/1.1\r\nHost: gateway.test\r\nX-Attack-Id: ${tag}\r\n` +
    'Content-Type: text/plain\r\nContent-Type: application/x-www-form-urlencoded\r\n' +
    `Content-Length: ${override.length}\r\n\r\n${override.toString('latin1')}`;
  const [reply] = await exchange(harness.port, text);
  await new Promise((resolve) => setTimeout(resolve, 150));
  const seen = seenBy(tag);
  if (reply?.status === 400) {
    t.is(seen, undefined);
    return;
  }
  t.is(reply?.status, 200);
  const types = (seen?.rawHeaders ?? []).filter(
    (_, index, raw) => index % 2 === 1 && /^content-type$/i.test(raw[index - 1] as string),
  );
  t.deepEqual(types, ['text/plain']);
});
