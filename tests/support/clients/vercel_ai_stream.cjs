// One streamText call through the Vercel AI SDK's Anthropic provider; prints {text, usage} as JSON.
// usage: node vercel_ai_stream.cjs BASE_URL API_KEY MODEL PROMPT   (NODE_PATH: npm's node_modules)
const { streamText } = require("ai");
const { createAnthropic } = require("@ai-sdk/anthropic");

async function main() {
  const [baseURL, apiKey, model, prompt] = process.argv.slice(2);
  const anthropic = createAnthropic({ baseURL: `${baseURL}/v1`, apiKey });
  const result = streamText({ model: anthropic(model), prompt, maxOutputTokens: 64, maxRetries: 0,
                              onError: ({ error }) => { throw error; } });
  let text = "";
  for await (const part of result.textStream) text += part;
  console.log(JSON.stringify({ text, usage: await result.usage }));
}

main().catch((error) => { console.error(error && error.stack || error); process.exit(1); });
