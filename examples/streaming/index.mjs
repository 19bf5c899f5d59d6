// A function URL answer streamed as it is produced: AWS's Node.js runtime
// (and Nimbus's) calls a handler wrapped in `awslambda.streamifyResponse`
// with a writable response stream; `HttpResponseStream.from` puts the status
// and headers in front of the body.

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export const handler = awslambda.streamifyResponse(async (event, responseStream) => {
  const stream = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: 200,
    headers: { "Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache" },
  });
  for (let i = 1; i <= 5; i++) {
    stream.write(`chunk ${i} of 5 at ${new Date().toISOString()}\n`);
    await pause(300);
  }
  stream.end("done\n");
});
