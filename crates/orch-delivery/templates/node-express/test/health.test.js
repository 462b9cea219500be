'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');

const { app, SERVICE_NAME } = require('../src/app');

test('GET /health reports ok', async () => {
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  try {
    const { port } = server.address();
    const res = await fetch(`http://127.0.0.1:${port}/health`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: 'ok', service: '{{ name }}' });
    assert.equal(SERVICE_NAME, '{{ name }}');
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});
