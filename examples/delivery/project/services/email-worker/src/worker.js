'use strict';
// The e-mail worker: renders order events into messages for the SMTP relay.

const TEMPLATES = {
  'order.placed': 'Hello {name}, we received order {order}.',
  'order.shipped': 'Hello {name}, order {order} is on its way.',
};

/** Fills `{key}` placeholders; a missing value is an error, never an empty hole. */
function render(template, values) {
  return template.replace(/\{([a-z]+)\}/g, (_, key) => {
    if (!(key in values)) {
      throw new Error(`missing value for {${key}}`);
    }
    return String(values[key]);
  });
}

/** The message for an event, or null when the event sends no e-mail. */
function messageFor(event) {
  const template = TEMPLATES[event.type];
  if (!template) {
    return null;
  }
  return {
    from: process.env.SMTP_FROM || 'shop@example.internal',
    to: event.email,
    subject: `Order ${event.order}`,
    body: render(template, event),
  };
}

if (require.main === module) {
  const host = process.env.SMTP_HOST || 'localhost';
  console.log(`email-worker ready; relay ${host}`);
}

module.exports = { messageFor, render };
