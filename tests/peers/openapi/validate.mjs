// Checks an OpenAPI 3.1 document, for the end-to-end tests.
//
//   node validate.mjs DOC.json                  the document against the official JSON Schema of
//                                               its OpenAPI version, every $ref resolved
//   node validate.mjs DOC.json ANSWERS.json     and real answers against the document: ANSWERS is
//                                               [{"method", "path" (as in the document), "status",
//                                               "body"}]; each body must match the JSON schema the
//                                               document gives for that operation and status
//
// Prints `valid <version>` (and `answers <n>`) and exits 0, or prints what is wrong and exits 1.
import { readFileSync } from "node:fs";
import { Validator } from "@seriousme/openapi-schema-validator";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const read = (file) => JSON.parse(readFileSync(file, "utf8"));
const [docFile, answersFile] = process.argv.slice(2);
if (!docFile) {
  console.log("usage: node validate.mjs DOC.json [ANSWERS.json]");
  process.exit(2);
}
const doc = read(docFile);

const validator = new Validator();
const result = await validator.validate(structuredClone(doc));
if (!result.valid) {
  console.log(JSON.stringify(result.errors, null, 2));
  process.exit(1);
}
try {
  validator.resolveRefs();
} catch (e) {
  console.log(`unresolved reference: ${e.message}`);
  process.exit(1);
}
console.log(`valid ${validator.version}`);
if (!answersFile) process.exit(0);

// The document's components, as one schema the answers' schemas refer into.
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
ajv.addSchema({ $id: "openapi.json", components: doc.components });
const rebase = (value) => {
  if (Array.isArray(value)) return value.map(rebase);
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [
        k,
        k === "$ref" && typeof v === "string" && v.startsWith("#/") ? `openapi.json${v}` : rebase(v),
      ]),
    );
  }
  return value;
};
const follow = (value) => {
  while (value && typeof value.$ref === "string") {
    value = value.$ref
      .slice(2)
      .split("/")
      .reduce((node, key) => node?.[key.replaceAll("~1", "/").replaceAll("~0", "~")], doc);
  }
  return value;
};

const problems = [];
const answers = read(answersFile);
for (const { method, path, status, body } of answers) {
  const name = `${method.toUpperCase()} ${path} ${status}`;
  const response = follow(doc.paths?.[path]?.[method.toLowerCase()]?.responses?.[String(status)]);
  if (!response) {
    problems.push(`${name}: the document gives no such response`);
    continue;
  }
  const schema = response.content?.["application/json"]?.schema;
  if (!schema) {
    if (body !== null && body !== undefined) problems.push(`${name}: a body where the document gives none`);
    continue;
  }
  const check = ajv.compile(rebase(schema));
  if (!check(body)) {
    const why = check.errors.map((e) => `    ${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`);
    problems.push(`${name}: the body does not match the document\n${why.join("\n")}`);
  }
}
if (problems.length) {
  console.log(problems.join("\n"));
  process.exit(1);
}
console.log(`answers ${answers.length}`);
