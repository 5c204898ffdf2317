import test from 'ava';
import { GatewayError } from '../src/errors.js';
import { normaliseRequestTarget } from '../src/policy/normalize-path.js';

// [raw request target, path the upstream receives, path routes are matched on]
const accepted: Array<[string, string, string?]> = [
  ['/api/orders/1', '/api/orders/1'],
  ['/api/orders/1?x=a//b\\c', '/api/orders/1'],
  ['/public//..//admin', '/admin'],
  ['/a//b///c', '/a/b/c'],
  ['/a/./b/../c', '/a/c'],
  ['/a/b/..', '/a/'],
  ['/a/b/.', '/a/b/'],
  ['/%61%70%69/x', '/api/x'], // unreserved characters decoded
  ['/a/%2e%2E/b', '/b'], // encoded dot-segments are dot-segments
  ['/a/%7e%5F', '/a/~_'],
  ['/caf%c3%a9', '/caf%C3%A9', '/café'], // other escapes kept, upper-case hex
  ['/a%20b', '/a%20b', '/a b'],
  ['/a%25zz', '/a%25zz', '/a%zz'], // a literal % that no second decode can turn into an escape
  ['/caf%C3%A9/K', '/caf%C3%A9/K', '/café/K'],
  ['http://api.example:8080/a', '/a'],
  ['/', '/'],
  ['http://example.com/a//b?q=1', '/a/b'], // absolute-form routes on its path
  ['http://example.com', '/'],
];

for (const [target, path, matchPath] of accepted) {
  test(`accepts ${JSON.stringify(target)} as ${path}`, (t) => {
    const result = normaliseRequestTarget(target);
    t.is(result.path, path);
    t.is(result.matchPath, matchPath ?? path);
  });
}

test('the query string is kept exactly as sent', (t) => {
  t.is(
    normaliseRequestTarget('/a//b?redirect=http://x//y&p=%2F').search,
    '?redirect=http://x//y&p=%2F',
  );
});

const refused: Array<[string, string]> = [
  ['/a%2fb', 'encoded /'],
  ['/a%2Fb', 'encoded / upper-case'],
  ['/a%5cb', 'encoded \\'],
  ['/a\\b', 'raw backslash'],
  ['/a%00b', 'encoded NUL'],
  ['/a%0d%0ab', 'encoded CRLF'],
  ['/a%1fb', 'encoded unit separator'],
  ['/a%7fb', 'encoded DEL'],
  ['/a\u0001b', 'raw control character'],
  ['/caf\u00e9', 'raw non-ASCII'],
  ['/a%c0%ae%c0%ae/b', 'overlong UTF-8 dot'],
  ['/a%ff', 'invalid UTF-8'],
  ['/a%e2%82', 'truncated UTF-8'],
  ['/a%zz', 'malformed escape'],
  ['/a%2', 'truncated escape'],
  ['/..', '.. above the root'],
  ['/a/../../b', '.. above the root, deeper'],
  ['/%2e%2e/x', 'encoded .. above the root'],
  ['/public/..;/admin', '..;param'],
  ['/public/.;x/admin', '.;param'],
  ['/public/..%3b/admin', 'encoded ;param'],
  ['/a#frag', 'fragment'],
  ['/a?x#frag', 'fragment in query'],
  ['*', 'asterisk-form'],
  ['example.com:443', 'authority-form'],
  ['ftp://example.com/a', 'other scheme'],
  ['/a;v=1/b', '; path parameter (servlet containers cut it)'],
  ['/admin;/users', 'empty ; path parameter'],
  ['/admin%3Bx/users', 'encoded ;'],
  ['/admin%3bx/users', 'encoded ; lower-case hex'],
  ['/%252e%252e/admin', 'double-encoded ..'],
  ['/a%252fb', 'double-encoded /'],
  ['/a%255cb', 'double-encoded \\'],
  ['/a%2561', 'double-encoded unreserved'],
  ['/adm%C4%B1n', 'U+0131 dotless i (Java equalsIgnoreCase reads i)'],
  ['/%C4%B0nfo', 'U+0130 dotted capital I'],
  ['/%C5%BFecret', 'U+017F long s'],
  ['/%E2%84%AAey', 'U+212A Kelvin sign'],
  ['/stra%C3%9Fe', 'U+00DF sharp s upper-cases to SS'],
  ['/%EF%AC%81le', 'U+FB01 ligature fi'],
  ['/%EF%BC%A1dmin', 'U+FF21 fullwidth A (NFKC)'],
  ['/public/%EF%BC%8E%EF%BC%8E%EF%BC%8Fadmin', 'fullwidth ../ (NFKC)'],
  ['http://user@api.example/a', 'userinfo in the authority'],
  ['http:///a', 'empty authority'],
  ['http://a b/x', 'space in the authority'],
];

for (const [target, why] of refused) {
  test(`refuses ${JSON.stringify(target)} (${why}) with 400`, (t) => {
    const error = t.throws(() => normaliseRequestTarget(target), { instanceOf: GatewayError });
    t.is(error?.status, 400);
    t.is(error?.oauthError, 'invalid_request');
  });
}

test('an absolute-form target yields its authority: the upstream Host (RFC 9112 §3.2.2)', (t) => {
  t.is(normaliseRequestTarget('http://api.example:8080/a?q').authority, 'api.example:8080');
  t.is(normaliseRequestTarget('http://[::1]:8080/a').authority, '[::1]:8080');
  t.is(normaliseRequestTarget('/a').authority, undefined);
});

test('non-ASCII that reads as ASCII nowhere else is kept', (t) => {
  // é, ü, CJK and an emoji: neither case mapping nor NFKC turns them into ASCII.
  for (const path of ['/caf%C3%A9', '/%C3%BCber', '/%E6%97%A5%E6%9C%AC', '/%F0%9F%98%80']) {
    t.is(normaliseRequestTarget(path).path, path);
  }
});
