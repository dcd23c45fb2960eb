// Checked by `tsc -p client/js/typecheck` in CI: the declarations of
// airlay.js accept what the README shows and refuse what is wrong.
import { connect, backoffDelay, tokenExpiry, DEFAULTS, AirlayClient } from "../airlay.js";
import type { AirlayEvent, Answer, State, FailCause } from "../airlay.js";

const client: AirlayClient = connect({
  url: "http://localhost:8081",
  token: () => fetch("/my-app/token").then((r) => r.text()),
  minBackoff: DEFAULTS.minBackoff,
  onState: (s: State) => {
    if (s.state === "fail") {
      const cause: FailCause | undefined = s.cause;
      console.log(s.error, cause, s.retry);
    } else if (s.state === "close") {
      console.log(s.reason, s.code);
    }
  },
});
client.on("state", (s) => console.log(s.state));
client.on("error", (e) => console.warn(e.action, e.answer?.code));
client.on("reload", (r) => console.log("reload", r.type, r.id));
const off: () => boolean = client.on("event", (e) => console.log(e.type, e.id, e.data.length));
off();

type IssueChange = string;
async function use(): Promise<void> {
  const onIssue = (e: AirlayEvent<IssueChange>) => console.log(e.id, e.data.map((f) => f.toUpperCase()));
  const a: Answer = await client.attach<IssueChange>("issueUpdate", "610217e481f6fc54736209e0", onIssue);
  if (a.code !== 0) console.log(a.message);
  await client.attach("notification");
  // After a drop: the missed events come to onIssue; or a reload.
  await client.attach<IssueChange>("issueUpdate", "610217e481f6fc54736209e1", onIssue, (r) => console.log("reload", r.type, r.id));
  const since: string = client.pos("issueUpdate", "610217e481f6fc54736209e1");
  console.log(since);
  await client.detach("issueUpdate", "610217e481f6fc54736209e0", onIssue);
  const subs: { type: string; id?: string }[] = client.subscriptions();
  console.log(subs, backoffDelay(1, 500, 30000), tokenExpiry("a.b.c"), client.state === "open");
  // Asked by a backend: a value, or a Promise of one, is the reply.
  const asked: Answer = await client.onRequest<string, { editing: boolean }>(async (data, req) => ({ editing: data[0] === req.id }));
  console.log(asked.code);
  await client.onRequest(() => ["plain"]);
  client.on("reply", (r) => console.log(r.id, r.answer.code));
  const taken: Answer = await client.reply("0123456789abcdef0123456789abcdef", [true]);
  console.log(taken.code);
  client.close();
}
void use();

// What must not compile.
// @ts-expect-error: minBackoff is a number of milliseconds
connect({ minBackoff: "500ms" });
// @ts-expect-error: the token provider returns a string
connect({ token: () => 42 });
// @ts-expect-error: there is no "message" listener
client.on("message", () => {});
// @ts-expect-error: a reply's data is an array
client.reply("0123", "yes");
// @ts-expect-error: an answer's code is a number
const bad: string = (await client.attach("notification")).code;
void bad;
