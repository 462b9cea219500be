'use strict';
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { messageFor, render } = require('../src/worker');

describe('email-worker', () => {
  it('renders an order confirmation', () => {
    const msg = messageFor({ type: 'order.placed', name: 'Ada', order: 'A-17', email: 'ada@example.org' });
    assert.equal(msg.to, 'ada@example.org');
    assert.equal(msg.subject, 'Order A-17');
    assert.equal(msg.body, 'Hello Ada, we received order A-17.');
  });

  it('ignores events without a template', () => {
    assert.equal(messageFor({ type: 'cart.viewed' }), null);
  });

  it('refuses to send a message with a hole in it', () => {
    assert.throws(() => render('Hi {name}', {}), /missing value for \{name\}/);
  });
});
