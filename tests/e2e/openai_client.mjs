// openai_client.mjs — `puyu serve` driven by the official OpenAI Node client.
//
// usage: node tests/e2e/openai_client.mjs TEXT_URL TOOL_URL API_KEY
//   TEXT_URL: a server with a text model (stories260K): chat, streaming,
//             completions, models, auth errors;
//   TOOL_URL: the scripted InternLM2 model of tests/test_serve.c, whose greedy
//             reply is always a get_weather plugin call: tools, streaming tools,
//             a follow-up turn with role "tool" ("-" skips these checks).
// Exits 0 when every check holds; prints what failed otherwise.
import OpenAI from 'openai';

const [textUrl, toolUrl, key] = process.argv.slice(2);
if (!textUrl || !toolUrl || !key) {
  console.error('usage: openai_client.mjs TEXT_URL TOOL_URL API_KEY');
  process.exit(2);
}
let failed = 0;
function check(cond, what, got) {
  if (cond) {
    console.log('ok   ' + what);
  } else {
    failed++;
    console.log('FAIL ' + what + (got !== undefined ? ': ' + JSON.stringify(got) : ''));
  }
}

const text = new OpenAI({ baseURL: textUrl, apiKey: key, maxRetries: 0, timeout: 60000 });
const tool = toolUrl === '-' ? null : new OpenAI({ baseURL: toolUrl, apiKey: key, maxRetries: 0, timeout: 60000 });

const models = await text.models.list();
const model = models.data[0].id;
check(typeof model === 'string' && model.length > 0, 'models.list', models.data);

const msgs = [{ role: 'system', content: 'You tell stories.' },
              { role: 'user', content: 'Tell me about a cat.' }];
const r = await text.chat.completions.create({ model, messages: msgs, temperature: 0, max_tokens: 24 });
const content = r.choices[0].message.content;
check(typeof content === 'string' && content.length > 0, 'chat non-streaming', r);
check(r.usage && r.usage.completion_tokens > 0 &&
      r.usage.total_tokens === r.usage.prompt_tokens + r.usage.completion_tokens, 'usage', r.usage);

const stream = await text.chat.completions.create({
  model, messages: msgs, temperature: 0, max_tokens: 24, stream: true,
  stream_options: { include_usage: true },
});
let streamed = '', finish = null, usage = null, chunks = 0;
for await (const ch of stream) {
  chunks++;
  if (ch.usage) usage = ch.usage;
  const c = ch.choices[0];
  if (!c) continue;
  if (c.delta && c.delta.content) streamed += c.delta.content;
  if (c.finish_reason) finish = c.finish_reason;
}
check(streamed === content, 'streaming equals non-streaming', { streamed, content });
check(chunks > 2 && (finish === 'length' || finish === 'stop'), 'stream finish', { chunks, finish });
check(usage && usage.completion_tokens === r.usage.completion_tokens, 'stream usage', usage);

// structured output: a closed schema (enum + boolean + integer) always completes
const schema = { type: 'object', required: ['color', 'ok', 'age'],
                 properties: { color: { enum: ['red', 'green', 'blue'] }, ok: { type: 'boolean' },
                               age: { type: 'integer' } } };
const js = await text.chat.completions.create({
  model, messages: msgs, temperature: 0.8, seed: 3, n: 2, max_tokens: 256,
  response_format: { type: 'json_schema', json_schema: { name: 'c', strict: true, schema } },
});
check(js.choices.length === 2 && js.choices.every((c) => {
  try {
    const o = JSON.parse(c.message.content);
    return c.finish_reason === 'stop' && ['red', 'green', 'blue'].includes(o.color) &&
           typeof o.ok === 'boolean' && Number.isInteger(o.age) && Object.keys(o).length === 3;
  } catch (e) { return false; }
}), 'response_format json_schema (n=2)', js.choices);
let badErr = null;
try {
  await text.chat.completions.create({ model, messages: msgs, max_tokens: 4,
                                       response_format: { type: 'yaml' } });
} catch (e) { badErr = e; }
check(badErr && badErr.status === 400 && badErr.param === 'response_format.type',
      'response_format: unknown type is a 400 naming the field', badErr && badErr.error);

const cr = await text.completions.create({ model, prompt: 'Once upon a time', max_tokens: 12, temperature: 0 });
check(typeof cr.choices[0].text === 'string' && cr.choices[0].text.length > 0, 'completions', cr);

// n choices with a seed, logit_bias, penalties: the client's types round-trip
const rn = await text.chat.completions.create({
  model, messages: msgs, temperature: 1, seed: 3, n: 2, max_tokens: 8,
  presence_penalty: 0.5, frequency_penalty: 0.5,
});
check(rn.choices.length === 2 && rn.choices[1].index === 1 &&
      typeof rn.choices[1].message.content === 'string', 'n = 2 choices', rn.choices);
const rn2 = await text.chat.completions.create({
  model, messages: msgs, temperature: 1, seed: 3, n: 2, max_tokens: 8,
  presence_penalty: 0.5, frequency_penalty: 0.5,
});
check(rn2.choices[0].message.content === rn.choices[0].message.content &&
      rn2.choices[1].message.content === rn.choices[1].message.content, 'seed reproduces n choices');
const lb = await text.completions.create({ model, prompt: 'Once', max_tokens: 3, temperature: 0,
                                           logit_bias: { '300': 100 }, logprobs: 0 });
const lbt = lb.choices[0].logprobs.tokens;
check(lbt.length === 3 && lbt[0] === lbt[1] && lbt[1] === lbt[2], 'logit_bias forces a token', lbt);
const emb = await text.embeddings.create({ model, input: ['a cat', 'a dog'] });
const v = emb.data[0].embedding;
const norm = Math.sqrt(v.reduce((a, x) => a + x * x, 0));
check(emb.data.length === 2 && v.length > 0 && Math.abs(norm - 1) < 1e-4 && emb.usage.prompt_tokens > 0,
      'embeddings (float)', { n: emb.data.length, dim: v.length, norm });
try {
  await text.completions.create({ model, prompt: 'a', suffix: 'b', max_tokens: 1 });
  check(false, 'suffix rejected');
} catch (e) {
  check(e instanceof OpenAI.BadRequestError && e.error && e.error.param === 'suffix', 'suffix -> 400 param suffix', e.message);
}

try {
  const bad = new OpenAI({ baseURL: textUrl, apiKey: 'wrong', maxRetries: 0 });
  await bad.models.list();
  check(false, 'wrong key rejected');
} catch (e) {
  check(e instanceof OpenAI.AuthenticationError && e.status === 401, 'wrong key -> 401 AuthenticationError', e.status);
}
try {
  await text.chat.completions.create({ model, messages: msgs, temperature: 'hot' });
  check(false, 'bad field rejected');
} catch (e) {
  check(e instanceof OpenAI.BadRequestError && /temperature/.test(e.message), 'bad type -> 400 naming the field', e.message);
}

if (toolUrl === '-') {
  console.log('skip tool checks (no tool-calling server)');
} else {
const tools = [{
    type: 'function',
    function: {
      name: 'get_weather', description: 'Get the current weather for a city',
      parameters: { type: 'object', properties: { city: { type: 'string' } } }, // the scripted call's {} follows it
    },
  }];
  const tmsgs = [{ role: 'user', content: 'What is the weather in Paris?' }];
  const tr = await tool.chat.completions.create({ model: 'x', messages: tmsgs, tools, temperature: 0, max_tokens: 64 });
  const tc = tr.choices[0].message.tool_calls;
  check(tr.choices[0].finish_reason === 'tool_calls', 'tools: finish_reason tool_calls', tr.choices[0]);
  check(tc && tc.length === 1 && tc[0].type === 'function' && tc[0].function.name === 'get_weather' &&
        typeof tc[0].id === 'string', 'tools: tool_calls', tc);
  check(tc && JSON.stringify(JSON.parse(tc[0].function.arguments)) === '{}', 'tools: arguments JSON', tc && tc[0].function.arguments);
  
  const ts = await tool.chat.completions.create({ model: 'x', messages: tmsgs, tools, temperature: 0, max_tokens: 64, stream: true });
  let tcontent = '', tname = '', targs = '', tfinish = null;
  for await (const ch of ts) {
    const c = ch.choices[0];
    if (!c) continue;
    if (c.delta.content) tcontent += c.delta.content;
    for (const d of c.delta.tool_calls || []) {
      if (d.function && d.function.name) tname += d.function.name;
      if (d.function && d.function.arguments) targs += d.function.arguments;
    }
    if (c.finish_reason) tfinish = c.finish_reason;
  }
  check(tname === 'get_weather' && targs === '{}' && tfinish === 'tool_calls', 'tools: streaming', { tname, targs, tfinish });
  check(!tcontent.includes('<|action_start|>'), 'tools: no protocol markup in streamed content', tcontent);
  
  const follow = await tool.chat.completions.create({
    model: 'x', tools, temperature: 0, max_tokens: 8,
    messages: tmsgs.concat([tr.choices[0].message,
      { role: 'tool', tool_call_id: tc ? tc[0].id : 'x', content: '{"temp": 21}' }]),
  });
  check(follow.choices.length === 1, 'tools: follow-up with role tool accepted', follow);
}

if (failed) {
  console.log(failed + ' check(s) failed');
  process.exit(1);
}
console.log('all openai client checks passed');
