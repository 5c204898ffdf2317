import type { IncomingMessage } from 'node:http';
import test from 'ava';
import { GatewayError } from '../src/errors.js';
import { MAX_TOKEN_BYTES, readBearerCredentials } from '../src/token/extract-bearer-token.js';

const requestWith = (values: string[]): IncomingMessage =>
  ({
    headers: values.length > 0 ? { authorization: values[0] } : {},
    rawHeaders: values.flatMap((value) => ['Authorization', value]),
  }) as unknown as IncomingMessage;

const wellFormed: Array<[string, string]> = [
  ['Bearer abc.DEF-123_~+/', 'abc.DEF-123_~+/'],
  ['bearer abc==', 'abc=='],
  ['BEARER abc', 'abc'],
  ['Bearer    abc', 'abc'], // 1*SP
  [`Bearer ${'a'.repeat(MAX_TOKEN_BYTES)}`, 'a'.repeat(MAX_TOKEN_BYTES)],
];
for (const [header, token] of wellFormed) {
  test(`reads ${JSON.stringify(header.slice(0, 24))}`, (t) => {
    t.deepEqual(readBearerCredentials(requestWith([header])), { kind: 'token', token });
  });
}

for (const header of [undefined, 'Basic dXNlcjpwYXNz', 'Digest x', 'Bearerabc']) {
  test(`no bearer credentials: ${String(header)}`, (t) => {
    t.deepEqual(readBearerCredentials(requestWith(header === undefined ? [] : [header])), {
      kind: 'absent',
    });
  });
}

const malformed: Array<[string[], string]> = [
  [['Bearer'], 'empty'],
  [['Bearer '], 'empty after space'],
  [['Bearer a b'], 'two tokens'],
  [['Bearer a=b'], '= inside'],
  [['Bearer a"b'], 'quote'],
  [['Bearer a,b'], 'comma'],
  [['Bearer é'], 'non-ASCII'],
  [[`Bearer ${'a'.repeat(MAX_TOKEN_BYTES + 1)}`], 'over 4 KiB'],
  [['Bearer a', 'Bearer b'], 'two Authorization headers'],
];
for (const [values, why] of malformed) {
  test(`malformed (${why}) is 400 invalid_request and a fishing failure`, (t) => {
    const error = t.throws(() => readBearerCredentials(requestWith(values)), {
      instanceOf: GatewayError,
    });
    t.is(error?.status, 400);
    t.is(error?.oauthError, 'invalid_request');
    t.is(error?.fishingReason, 'malformed');
    t.false(error?.message.includes('a'.repeat(8)) ?? true, 'the token is not in the message');
  });
}
