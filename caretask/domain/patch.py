"""PATCH as plain data: a JSON Patch (RFC 6902) or a FHIRPath Patch (a `Parameters`
resource, FHIR R4 fhirpatch.html) applied to a Task.

The patch is applied to a copy, one operation at a time; the caller validates the result
as it would an update's body. Refusals: InvalidRequest (400) for a patch document that is
not one (malformed operations, a path that does not parse), Unprocessable (422) for one
that cannot be applied to this Task (a path that selects nothing, or more than one element
where FHIR wants one; an index out of range; a result nested too deep or grown too large),
PatchConflict (409) for a JSON Patch `test` that fails. FHIRPath is evaluated by
fhirpathpy, JSON Patch applied by jsonpatch: only where they point is worked out here.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jsonpatch
import jsonpointer
import orjson
from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from antlr4.tree.Tree import ParseTreeWalker
from fhir.resources.R4B.task import Task as TaskModel
from fhirpathpy import apply_parsed_path
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models
from fhirpathpy.parser.ASTPathListener import ASTPathListener
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from caretask.domain.errors import InvalidRequest, PatchConflict, Unprocessable
from caretask.domain.task_rules import MAX_DEPTH, elements

JSON_PATCH = "application/json-patch+json"
# a patch is a few operations; each FHIRPath one costs a parse and an evaluation (~2 ms)
MAX_OPERATIONS = 200
MAX_PATH_CHARS = 500

Step = str | int
Steps = tuple[Step, ...]

_R4 = models["r4"]
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_SEGMENT = re.compile(r"([A-Za-z][A-Za-z0-9]*)(?:\[([0-9]+)\])?")
_JSON_OPS = ("add", "remove", "replace", "move", "copy", "test")


@dataclass(frozen=True)
class Patch:
    """A patch document found well-formed: JSON Patch operations, or FHIRPath Patch ones
    with their paths parsed (read before the Task is looked up and locked: a malformed patch
    is a 400 whatever the Task, and the parsing is not done under the lock)."""

    json: tuple[dict[str, Any], ...] | None = None
    fhirpath: tuple[_Operation, ...] | None = None


def read_patch(document: Any, media_type: str, max_depth: int = MAX_DEPTH) -> Patch:
    """The parsed body of a PATCH as a Patch: a JSON Patch when `media_type` is JSON_PATCH,
    else a FHIRPath Patch. InvalidRequest for a document that is not one."""
    # values sit two levels down in a JSON Patch and two per level in nested parts
    if _depth(document, 2 * max_depth + 8) > 2 * max_depth + 6:
        raise InvalidRequest.single("too-costly", "the patch document is nested too deeply")
    if media_type == JSON_PATCH:
        return Patch(json=_json_operations(document))
    return Patch(fhirpath=_fhirpath_operations(document))


def apply_patch(
    resource: dict[str, Any],
    patch: Patch,
    *,
    max_depth: int = MAX_DEPTH,
    max_bytes: int = 1 << 20,
) -> dict[str, Any]:
    """`resource` with `patch` applied; `resource` is left as it was. `max_depth` and
    `max_bytes` bound what the patch may make of it (a Task's nesting and size limits), so
    that a few `copy` operations cannot grow it exponentially."""
    if patch.json is not None:
        patched = _json_patch(resource, patch.json, max_depth, max_bytes)
    else:
        assert patch.fhirpath is not None
        patched = _fhirpath_patch(resource, patch.fhirpath, max_depth)
    if not isinstance(patched, dict):
        raise Unprocessable.single("processing", "the patched resource is not a JSON object")
    if patched.get("id") != resource.get("id"):
        raise Unprocessable.single("processing", "a patch cannot change the Task's id", "Task.id")
    return patched


def _depth(value: Any, limit: int) -> int:
    """How deep `value` nests (0 for a scalar, 1 for an object of scalars...), counted up
    to just past `limit`: iteratively, so that a hostile value cannot exhaust the stack."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if level > limit:
            return level
        if isinstance(node, dict):
            stack.extend((child, level + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, level + 1) for child in node)
    return deepest


def _too_deep(where: str, at: int, value: Any, max_depth: int) -> None:
    """Refuse to put `value` `at` levels down when the Task would nest past `max_depth`."""
    if at + _depth(value, max_depth) > max_depth:
        text = f"{where}: the result would nest deeper than {max_depth} levels"
        raise Unprocessable.single("too-costly", text)


def _count(operations: int) -> None:
    if operations > MAX_OPERATIONS:
        text = f"a patch may hold at most {MAX_OPERATIONS} operations, not {operations}"
        raise InvalidRequest.single("too-costly", text)


def _quoted(text: object) -> str:
    return str(text)[:200]


# --- JSON Patch (RFC 6902, with jsonpatch) ---------------------------------------------------


def _pointer(operation: dict[str, Any], member: str, where: str) -> list[str]:
    text = operation.get(member)
    if not isinstance(text, str):
        raise InvalidRequest.single("structure", f"{where}: '{member}' must be a JSON Pointer")
    try:
        parts: list[str] = jsonpointer.JsonPointer(text).parts
    except jsonpointer.JsonPointerException as error:
        raise InvalidRequest.single("structure", f"{where}: {_quoted(error)}") from None
    return parts


def _json_operations(operations: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(operations, list):
        text = f"a JSON Patch ({JSON_PATCH}) is a JSON array of operations"
        raise InvalidRequest.single("structure", text)
    _count(len(operations))
    for number, operation in enumerate(operations):
        where = f"operation {number}"
        if not isinstance(operation, dict):
            raise InvalidRequest.single("structure", f"{where} is not a JSON object")
        op = operation.get("op")
        if op not in _JSON_OPS:
            text = f"{where}: 'op' must be one of {', '.join(_JSON_OPS)}"
            raise InvalidRequest.single("structure", text)
        _pointer(operation, "path", where)
        if op in ("add", "replace", "test") and "value" not in operation:
            raise InvalidRequest.single("structure", f"{where}: a '{op}' needs a 'value'")
        if op in ("move", "copy"):
            _pointer(operation, "from", where)
    return tuple(operations)


def _json_patch(
    resource: dict[str, Any], operations: tuple[dict[str, Any], ...], max_depth: int, max_bytes: int
) -> Any:
    doc: Any = copy.deepcopy(resource)
    # a bound on the document's size: only values the patch adds or copies make it grow
    size = len(orjson.dumps(doc))
    for number, operation in enumerate(operations):
        where = f"operation {number}"
        op = operation["op"]
        path = _pointer(operation, "path", where)
        if op in ("move", "copy"):
            source = _pointer(operation, "from", where)
            try:
                moved = jsonpointer.JsonPointer.from_parts(source).resolve(doc)
            except (jsonpointer.JsonPointerException, TypeError, KeyError, IndexError):
                moved = jsonpointer.EndOfList(None)
            if isinstance(moved, jsonpointer.EndOfList):  # `/note/-` names no item
                text = f"{where}: 'from' names nothing in the Task"
                raise Unprocessable.single("processing", text)
            _too_deep(where, len(path), moved, max_depth)
            if op == "copy":
                size += len(orjson.dumps(moved))
        elif op in ("add", "replace"):
            _too_deep(where, len(path), operation["value"], max_depth)
            size += len(orjson.dumps(operation["value"]))
        if size > max_bytes:
            text = f"{where}: the result would be larger than {max_bytes} bytes"
            raise Unprocessable.single("too-costly", text)
        try:
            doc = jsonpatch.JsonPatch([operation]).apply(doc, in_place=True)
        except jsonpatch.JsonPatchTestFailed:
            text = f"{where}: test failed: the Task's value at '{_quoted(operation['path'])}' "
            raise PatchConflict.single("conflict", text + "is not the one given") from None
        except jsonpatch.InvalidJsonPatch as error:
            raise InvalidRequest.single("structure", f"{where}: {_quoted(error)}") from None
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as error:
            raise Unprocessable.single("processing", f"{where}: {_quoted(error)}") from None
        except (TypeError, KeyError, IndexError, ValueError):
            text = f"{where}: '{_quoted(operation['path'])}' cannot be applied to the Task"
            raise Unprocessable.single("processing", text) from None
    return _without_empty(doc)


def _without_empty(value: Any) -> Any:
    """`value` without the empty arrays and objects in it: FHIR JSON has none, and a JSON
    Patch that removes the last note leaves `"note": []`, meaning the Task has no notes.
    (Recursive: the patched Task's depth is bounded by then.)"""
    if isinstance(value, dict):
        pruned = {k: _without_empty(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v != {} and v != []}
    if isinstance(value, list):
        return [v for v in map(_without_empty, value) if v != {} and v != []]
    return value


# --- FHIRPath Patch (FHIR R4 fhirpatch.html, paths evaluated with fhirpathpy) ----------------

# the parts each type of operation needs
_NEEDS = {
    "add": ("path", "name", "value"),
    "insert": ("path", "value", "index"),
    "delete": ("path",),
    "replace": ("path", "value"),
    "move": ("path", "source", "destination"),
}
_PARTS = frozenset(("type", "path", "name", "value", "index", "source", "destination"))


@dataclass(frozen=True)
class _Value:
    """A `value` part: the JSON of its value[x] and the type (`String` of valueString), or,
    for a complex value given as nested parts, the (name, value) of each."""

    json: Any = None
    type: str | None = None
    parts: tuple[tuple[str, _Value], ...] | None = None


@dataclass(frozen=True)
class _Operation:
    where: str
    type: str
    path: str
    ast: Any
    name: str | None
    value: _Value | None
    index: int | None
    source: int | None
    destination: int | None


class _Raising(ErrorListener):  # type: ignore[misc]
    def syntaxError(self, *args: Any) -> None:
        raise ValueError(args[-2])


@lru_cache(maxsize=512)
def _parse(path: str) -> Any:
    """fhirpathpy's parse, but strict: its own recovers from syntax errors (`Task.(`
    parses), and a patch must not guess at what a malformed path meant. Cached: a parse
    costs about 2 ms, and clients send the same few paths (the tree is only read)."""
    listener = _Raising()
    lexer = FHIRPathLexer(InputStream(path))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    tokens = CommonTokenStream(lexer)
    parser = FHIRPathParser(tokens)
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    tree = parser.expression()
    if tokens.LA(1) != Token.EOF:
        raise ValueError("unexpected text after the expression")
    ast = ASTPathListener()  # type: ignore[no-untyped-call]
    ParseTreeWalker().walk(ast, tree)
    return ast.parentStack[0]


def _value_part(part: dict[str, Any], where: str) -> _Value:
    keys = [k for k in part if k.startswith("value") and k[5:6].isupper()]
    nested = part.get("part")
    if len(keys) == 1 and nested is None:
        return _Value(json=part[keys[0]], type=keys[0][5:])
    if not keys and isinstance(nested, list) and nested:
        items = []
        for number, sub in enumerate(nested):
            here = f"{where}.part[{number}]"
            if not isinstance(sub, dict) or not isinstance(sub.get("name"), str):
                raise InvalidRequest.single("structure", f"{here} needs a name", here)
            items.append((sub["name"], _value_part(sub, here)))
        return _Value(parts=tuple(items))
    text = "a value is one value[x], or parts that each name an element"
    raise InvalidRequest.single("structure", text, where)


def _primitive(parts: dict[str, dict[str, Any]], name: str, where: str) -> Any:
    part = parts.get(name)
    if part is None:
        return None
    kind = int if name in ("index", "source", "destination") else str
    keys = ("valueInteger",) if kind is int else ("valueCode", "valueString")
    for key in keys:
        value = part.get(key)
        if type(value) is kind and not (isinstance(value, int) and value < 0):
            return value
    shown = "a non-negative valueInteger" if kind is int else "a valueString"
    raise InvalidRequest.single("structure", f"the part '{name}' needs {shown}", where)


def _operation(parameter: Any, number: int) -> _Operation:
    where = f"Parameters.parameter[{number}]"
    if not isinstance(parameter, dict) or parameter.get("name") != "operation":
        text = "each parameter of a FHIRPath Patch is named 'operation'"
        raise InvalidRequest.single("structure", text, where)
    parts = parameter.get("part")
    if not isinstance(parts, list):
        raise InvalidRequest.single("structure", "an operation is a list of parts", where)
    found: dict[str, dict[str, Any]] = {}
    for part in parts:
        name = part.get("name") if isinstance(part, dict) else None
        if not isinstance(name, str) or name not in _PARTS or name in found:
            text = f"each part is one of {', '.join(sorted(_PARTS))}, given once"
            raise InvalidRequest.single("structure", text, where)
        assert isinstance(part, dict) and isinstance(name, str)
        found[name] = part
    kind = _primitive(found, "type", where)
    if kind not in _NEEDS:
        text = f"the type must be one of {', '.join(_NEEDS)}"
        raise InvalidRequest.single("structure", text, where)
    missing = [name for name in _NEEDS[kind] if name not in found]
    if missing:
        text = f"a '{kind}' needs the parts {', '.join(_NEEDS[kind])}"
        raise InvalidRequest.single("required", text, where)
    path = _primitive(found, "path", where)
    if len(path) > MAX_PATH_CHARS:
        text = f"a path is at most {MAX_PATH_CHARS} characters"
        raise InvalidRequest.single("too-costly", text, where)
    try:
        ast = _parse(path)
    except Exception:  # antlr's errors share no base class; RecursionError for deep nesting
        text = f"the path '{_quoted(path)}' is not a FHIRPath expression"
        raise InvalidRequest.single("invalid", text, where) from None
    name = _primitive(found, "name", where)
    if name is not None and not _NAME.fullmatch(name):
        raise InvalidRequest.single("invalid", "the name must be an element's name", where)
    value = _value_part(found["value"], where) if "value" in found else None
    return _Operation(
        where,
        kind,
        path,
        ast,
        name,
        value,
        _primitive(found, "index", where),
        _primitive(found, "source", where),
        _primitive(found, "destination", where),
    )


def _fhirpath_operations(parameters: Any) -> tuple[_Operation, ...]:
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        text = f"a FHIRPath Patch is a Parameters resource (a JSON Patch is sent as {JSON_PATCH})"
        raise InvalidRequest.single("structure", text)
    listed = parameters.get("parameter", [])
    if not isinstance(listed, list):
        raise InvalidRequest.single("structure", "Parameters.parameter must be an array")
    _count(len(listed))
    return tuple(_operation(parameter, number) for number, parameter in enumerate(listed))


def _fhirpath_patch(
    resource: dict[str, Any], operations: tuple[_Operation, ...], max_depth: int
) -> Any:
    doc = copy.deepcopy(resource)
    for operation in operations:
        _APPLY[operation.type](doc, operation, max_depth)
    return doc


@dataclass(frozen=True)
class _Place:
    """Where a selected element is: the keys and indexes from the root, and the element's
    FHIRPath name (`value` for a `valueString`)."""

    steps: Steps
    name: str | None


def _resolve(doc: Any, steps: Steps) -> Any:
    here = doc
    for step in steps:
        here = here[step]
    return here


def _key(node: dict[str, Any], name: str) -> str | None:
    """The JSON key of element `name` in `node`: the name, or a choice's (valueString)."""
    if name in node:
        return name
    keys = [k for k in node if k.startswith(name) and k[len(name) : len(name) + 1].isupper()]
    return keys[0] if len(keys) == 1 else None


def _place(doc: dict[str, Any], node: Any) -> _Place | None:
    """Where a node fhirpathpy selected is in `doc`, from its location
    (`Task.note[0].text`), checked to hold that node's data; None for a computed value."""
    if not isinstance(node, ResourceNode):
        return None
    if node.propName is None:
        return _Place((), None) if node.data is doc else None
    steps: list[Step] = []
    name = None
    here: Any = doc
    for segment in node.propName.split(".")[1:]:  # the first is the resource type
        match = _SEGMENT.fullmatch(segment)
        if match is None or not isinstance(here, dict):
            return None
        name = match[1]
        key = _key(here, name)
        if key is None:
            return None
        here = here[key]
        steps.append(key)
        if match[2] is not None:
            index = int(match[2])
            if not isinstance(here, list) or index >= len(here):
                return None
            here = here[index]
            steps.append(index)
    data = node.data
    same = here is data if isinstance(here, dict | list) else here == data
    return _Place(tuple(steps), name) if same else None


def _select(doc: dict[str, Any], operation: _Operation, ast: Any = None) -> list[_Place]:
    try:
        nodes = apply_parsed_path(  # type: ignore[no-untyped-call]
            doc, ast or operation.ast, {}, _R4, {"returnRawData": True}
        )
    except Exception:  # fhirpathpy raises plain Exceptions (an unknown function, %variable)
        text = f"the path '{_quoted(operation.path)}' could not be evaluated on the Task"
        raise Unprocessable.single("processing", text, operation.where) from None
    places = [_place(doc, node) for node in nodes]
    if any(place is None for place in places):
        text = "the path must select elements of the Task, not computed values"
        raise Unprocessable.single("processing", text, operation.where)
    return [place for place in places if place is not None]


def _one(doc: dict[str, Any], operation: _Operation) -> _Place:
    places = _select(doc, operation)
    if len(places) != 1:
        text = f"the path selects {len(places)} elements; a '{operation.type}' needs exactly one"
        raise Unprocessable.single("processing", text, operation.where)
    return places[0]


def _model_at(steps: Steps) -> Any:
    """The fhir.resources class of the element at `steps`, or None (a primitive, or not
    an element FHIR defines)."""
    model: Any = TaskModel
    for step in steps:
        if isinstance(step, int):
            continue
        known = elements(model).get(step) if model is not None else None
        model = known[1] if known else None
    return model


def _field(model: Any, name: str, kind: str | None) -> tuple[str, bool, Any]:
    """The JSON key, whether it repeats, and the class of element `name` of `model`, given
    as a value of type `kind` (a choice's key carries the type: valueString)."""
    fields = elements(model) if model is not None else {}
    for key in (name, f"{name}{kind}" if kind else None):
        if key is not None and key in fields:
            repeats, child = fields[key]
            return key, repeats, child
    return name, False, None  # not an element of the model: validation names it


def _json(value: _Value, model: Any, where: str) -> Any:
    """A value part as FHIR JSON, its nested parts keyed and listed as `model` says."""
    if value.parts is None:
        return value.json
    out: dict[str, Any] = {}
    for name, part in value.parts:
        key, repeats, child = _field(model, name, part.type)
        item = _json(part, child, where)
        if repeats:
            out.setdefault(key, []).append(item)
        elif key in out:
            text = f"the value gives '{_quoted(name)}' twice; it does not repeat"
            raise Unprocessable.single("processing", text, where)
        else:
            out[key] = item
    return out


def _prune(doc: dict[str, Any], steps: Steps) -> None:
    """Remove what `steps` names, then each container left empty (FHIR has no empty
    objects or arrays)."""
    while steps:
        parent = _resolve(doc, steps[:-1])
        del parent[steps[-1]]
        if parent or len(steps) == 1:
            return
        steps = steps[:-1]


def _add(doc: dict[str, Any], operation: _Operation, max_depth: int) -> None:
    assert operation.name is not None and operation.value is not None
    place = _one(doc, operation)
    container = _resolve(doc, place.steps)
    if not isinstance(container, dict):
        text = "an 'add' needs a path to an element that has elements (not a primitive)"
        raise Unprocessable.single("processing", text, operation.where)
    key, repeats, child = _field(_model_at(place.steps), operation.name, operation.value.type)
    new = _json(operation.value, child, operation.where)
    _too_deep(operation.where, len(place.steps) + 1 + int(repeats), new, max_depth)
    if isinstance(container.get(key), list):
        container[key].append(new)
    elif key in container:
        text = f"'{operation.name}' is already there: replace it"
        raise Unprocessable.single("processing", text, operation.where)
    else:
        container[key] = [new] if repeats else new


def _replace(doc: dict[str, Any], operation: _Operation, max_depth: int) -> None:
    assert operation.value is not None
    place = _one(doc, operation)
    if not place.steps:
        text = "replace elements of the Task, not the Task itself (PUT replaces it)"
        raise Unprocessable.single("processing", text, operation.where)
    parent = _resolve(doc, place.steps[:-1])
    last = place.steps[-1]
    key: Step = last
    model = _model_at(place.steps)
    if isinstance(last, str):
        # a choice may change its type: a valueString replaced by a valueInteger
        owner = _model_at(place.steps[:-1])
        named, _, typed = _field(owner, place.name or last, operation.value.type)
        if owner is not None and named in elements(owner):
            key, model = named, typed
    new = _json(operation.value, model, operation.where)
    _too_deep(operation.where, len(place.steps), new, max_depth)
    if key != last:
        del parent[last]
    parent[key] = new


def _delete(doc: dict[str, Any], operation: _Operation, max_depth: int) -> None:
    places = _select(doc, operation)
    if not places:
        return  # FHIR: deleting what is not there is no error
    if len(places) > 1:
        text = f"the path selects {len(places)} elements; a 'delete' takes one"
        raise Unprocessable.single("processing", text, operation.where)
    if not places[0].steps:
        raise Unprocessable.single(
            "processing", "a patch cannot delete the Task itself", operation.where
        )
    _prune(doc, places[0].steps)


def _member(ast: Any) -> tuple[Any, str] | None:
    """An expression `X.name` as X's tree and `name`; None for another shape."""
    top = ast.get("children", [None])[0]
    if not isinstance(top, dict) or top.get("type") != "InvocationExpression":
        return None
    children = top.get("children", [])
    if len(children) != 2 or children[1].get("type") != "MemberInvocation":
        return None
    identifier = (children[1].get("children") or [{}])[0].get("text")
    if not isinstance(identifier, str):
        return None
    return {"children": [children[0]]}, identifier.strip("`")


def _collection(doc: dict[str, Any], operation: _Operation) -> tuple[Steps, list[Any]]:
    """The list that an insert's or move's path names (its items, as FHIRPath flattens
    them); an empty one an insert may start, named `X.name`, is made under X."""
    places = _select(doc, operation)
    parents = {place.steps[:-1] for place in places}
    if len(parents) == 1 and all(p.steps and isinstance(p.steps[-1], int) for p in places):
        steps = parents.pop()
        return steps, _resolve(doc, steps)
    member = _member(operation.ast) if not places and operation.type == "insert" else None
    if member is not None:
        ast, name = member
        owners = _select(doc, operation, ast)
        owner = _resolve(doc, owners[0].steps) if len(owners) == 1 else None
        key, repeats, _ = _field(_model_at(owners[0].steps) if owners else None, name, None)
        if isinstance(owner, dict) and repeats and key not in owner:
            owner[key] = []
            return (*owners[0].steps, key), owner[key]
    text = "the path must select the items of one repeating element (a list)"
    raise Unprocessable.single("processing", text, operation.where)


def _insert(doc: dict[str, Any], operation: _Operation, max_depth: int) -> None:
    assert operation.value is not None and operation.index is not None
    steps, listed = _collection(doc, operation)
    if operation.index > len(listed):
        text = f"index {operation.index} is past the end of the list ({len(listed)} items)"
        raise Unprocessable.single("processing", text, operation.where)
    new = _json(operation.value, _model_at(steps), operation.where)
    _too_deep(operation.where, len(steps) + 1, new, max_depth)
    listed.insert(operation.index, new)


def _move(doc: dict[str, Any], operation: _Operation, max_depth: int) -> None:
    assert operation.source is not None and operation.destination is not None
    _, listed = _collection(doc, operation)
    if max(operation.source, operation.destination) >= len(listed):
        text = f"source and destination must be indexes of the list ({len(listed)} items)"
        raise Unprocessable.single("processing", text, operation.where)
    listed.insert(operation.destination, listed.pop(operation.source))


_APPLY = {"add": _add, "insert": _insert, "delete": _delete, "replace": _replace, "move": _move}
