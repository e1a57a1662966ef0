// Renders /openapi.json as a readable page. Served locally, no external requests; every string
// from the document is inserted with textContent.
"use strict";

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

// Proto comments are Markdown: `code spans` and blank-line paragraphs. Rendered as nodes, never
// as HTML, so a comment cannot inject markup.
function rich(tag, text, className) {
  const node = el(tag, null, className);
  const paragraphs = String(text || "").split(/\n\s*\n/);
  paragraphs.forEach((paragraph, index) => {
    if (index > 0) node.append(document.createElement("br"), document.createElement("br"));
    const parts = paragraph.replace(/\s*\n\s*/g, " ").split(/(`[^`]+`)/);
    for (const part of parts) {
      if (part.length > 2 && part.startsWith("`") && part.endsWith("`")) {
        node.append(el("code", part.slice(1, -1)));
      } else if (part) {
        node.append(document.createTextNode(part));
      }
    }
  });
  return node;
}

function refName(ref) {
  return ref.replace("#/components/schemas/", "");
}

function typeOf(schema) {
  if (!schema) return "any";
  if (schema.$ref) return refName(schema.$ref);
  if (schema.allOf && schema.allOf.length === 1) return typeOf(schema.allOf[0]);
  if (schema.type === "array") return `${typeOf(schema.items)}[]`;
  if (schema.enum) return `enum(${schema.enum.join(" | ")})`;
  const type = Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type || "any";
  return schema.format ? `${type} (${schema.format})` : type;
}

function typeCell(schema) {
  const cell = el("td", null, "type");
  const ref = schema && (schema.$ref || (schema.items && schema.items.$ref) ||
    (schema.allOf && schema.allOf[0] && schema.allOf[0].$ref));
  if (ref) {
    const link = el("a", typeOf(schema));
    link.href = `#schema-${refName(ref)}`;
    cell.append(link);
  } else {
    cell.textContent = typeOf(schema);
  }
  return cell;
}

function table(headers, rows) {
  const node = el("table");
  const head = el("tr");
  for (const header of headers) head.append(el("th", header));
  node.append(head);
  for (const row of rows) node.append(row);
  return node;
}

function renderOperation(path, method, operation) {
  const details = el("details", null, "operation");
  details.id = operation.operationId;
  const summary = el("summary");
  summary.append(el("span", method, `method ${method}`), el("span", path, "path"), el("span", operation.summary));
  details.append(summary);
  if (operation.description) details.append(rich("p", operation.description, "description"));

  if (operation.parameters && operation.parameters.length) {
    details.append(el("h4", "Parameters"));
    const rows = operation.parameters.map((p) => {
      const row = el("tr");
      row.append(el("td", p.name, "type"), el("td", p.in), typeCell(p.schema), rich("td", p.description));
      return row;
    });
    details.append(table(["name", "in", "type", "description"], rows));
  }
  if (operation.requestBody) {
    details.append(el("h4", "Request body"));
    const rows = Object.entries(operation.requestBody.content).map(([media, content]) => {
      const row = el("tr");
      row.append(el("td", media, "type"), typeCell(content.schema));
      return row;
    });
    details.append(table(["content type", "schema"], rows));
    const json = operation.requestBody.content["application/json"];
    if (json && json.schema && json.schema.properties) details.append(propertiesTable(json.schema));
  }
  details.append(el("h4", "Responses"));
  const rows = Object.entries(operation.responses).map(([code, response]) => {
    const row = el("tr");
    const content = response.content || {};
    const first = Object.entries(content)[0];
    row.append(el("td", code), el("td", first ? first[0] : "", "type"));
    row.append(first ? typeCell(first[1].schema) : el("td"), rich("td", response.description));
    return row;
  });
  details.append(table(["status", "content type", "schema", "description"], rows));
  return details;
}

function propertiesTable(schema) {
  const rows = Object.entries(schema.properties || {}).map(([name, property]) => {
    const row = el("tr");
    const flags = property.readOnly ? " (output only)" : "";
    const required = (schema.required || []).includes(name) ? " (required)" : "";
    row.append(el("td", name + flags + required, "type"), typeCell(property), rich("td", property.description));
    return row;
  });
  return table(["field", "type", "description"], rows);
}

async function main() {
  const operations = document.getElementById("operations");
  let doc;
  try {
    const response = await fetch("/openapi.json", { headers: { Accept: "application/json" } });
    doc = await response.json();
  } catch (error) {
    operations.replaceChildren(el("p", `Could not load /openapi.json: ${error}`));
    return;
  }
  document.getElementById("title").textContent = `${doc.info.title} ${doc.info.version}`;
  document.getElementById("description").replaceWith(rich("p", doc.info.description, ""));

  const byTag = new Map();
  for (const tag of doc.tags || []) byTag.set(tag.name, { tag, items: [] });
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, operation] of Object.entries(item)) {
      const name = (operation.tags || ["other"])[0];
      if (!byTag.has(name)) byTag.set(name, { tag: { name }, items: [] });
      byTag.get(name).items.push([path, method, operation]);
    }
  }
  const toc = document.getElementById("toc");
  operations.replaceChildren();
  for (const [name, group] of byTag) {
    const section = el("section");
    section.id = `tag-${name}`;
    section.append(el("h2", name));
    if (group.tag.description) section.append(rich("p", group.tag.description, "description"));
    for (const [path, method, operation] of group.items) section.append(renderOperation(path, method, operation));
    operations.append(section);
    const link = el("a", name);
    link.href = `#tag-${name}`;
    toc.append(link, document.createTextNode(" "));
  }

  const schemas = document.getElementById("schemas");
  for (const [name, schema] of Object.entries(doc.components.schemas).sort()) {
    const block = el("div", null, "schema");
    block.id = `schema-${name}`;
    block.append(el("h3", name));
    if (schema.description) block.append(rich("p", schema.description, "description"));
    if (schema.properties) block.append(propertiesTable(schema));
    schemas.append(block);
  }
}

document.addEventListener("DOMContentLoaded", main);
