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
  ['/a;v=1/b', '/a;v=1/b'],
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
];

for (const [target, why] of refused) {
  test(`refuses ${JSON.stringify(target)} (${why}) with 400`, (t) => {
    const error = t.throws(() => normaliseRequestTarget(target), { instanceOf: GatewayError });
    t.is(error?.status, 400);
    t.is(error?.oauthError, 'invalid_request');
  });
}
