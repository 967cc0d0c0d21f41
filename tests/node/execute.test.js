// execute.test.js: what the execute and inputReply calls refuse that a case file cannot hold:
// strings JS can hold but UTF-8 cannot (lone surrogates), and cells of several megabytes. Running cells is data:
// tests/cases/execute.json. Names match tests/c and tests/lua.
'use strict';

const { assert, kernel, closeAll, rejects, nextEvent } = require('./helpers');

describe('execute', function () {
  afterEach(closeAll);

  it('kernel_invalid_utf8', async function () {
    const { k } = await kernel();
    // JS strings are UTF-16: a lone surrogate cannot be encoded and must not be replaced.
    for (const code of ['x = "\ud800"', '"\udc00"', 'y = 1 # \ud83d']) {
      await rejects(k.execute(code), 'KH_EENCODING');
    }
    assert.equal((await k.execute('"\ud83d\ude00"')).result.data['text/plain'], "'\ud83d\ude00'");
  });

  it('input_reply_invalid_utf8', async function () {
    const { m, id, k } = await kernel();
    const asked = nextEvent(m, id, 'input_request');
    const done = k.execute("x = input('? ')\nlen(x), x == 'ok\\x00\\xe9'");
    await asked;
    // The JS form of a reply UTF-8 cannot carry: a lone surrogate, refused, never replaced.
    for (const bad of ['bad\ud800', '\udc00']) await rejects(k.inputReply(bad), 'KH_EENCODING');
    await k.inputReply('ok\0\u00e9'); // a NUL and an é, whole
    assert.equal((await done).result.data['text/plain'], '(4, True)');
  });

  it('kernel_huge_cell', async function () {
    const { k } = await kernel();
    await rejects(k.execute('#'.repeat(10 * 1024 * 1024)), 'KH_ETOOBIG');
    await rejects(k.execute(`x = '${'\u00e9'.repeat(2.5 * 1024 * 1024)}'`), 'KH_ETOOBIG');
    assert.equal((await k.execute(`len('${'a'.repeat(1024 * 1024)}')`)).result.data['text/plain'],
      String(1024 * 1024));
  });
});
