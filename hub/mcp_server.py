"""The hub's MCP server: Gradio's, with what a public hub needs.

- Each MCP session is its own visitor. Gradio calls the app through one shared gradio_client (one Gradio session
  for every MCP caller), so each call carries a signed header naming its MCP session (hub.visitors), and the
  caller's own address in X-Forwarded-For (the loopback client is a trusted proxy), never a header the caller
  wrote. Streamable HTTP runs with sessions (Mcp-Session-Id) for this; the SSE transport has its session id.
- Tool names are the endpoints' names (`text_to_image`, `zero_shot_matrix`), not the Python functions' names.
- A file parameter (an image, a list of files) takes a data: URI (or a URL of a file uploaded here), whatever
  its endpoint's schema says: the schemas of JSON endpoints named it an object and left references to nowhere.
- An endpoint with several outputs (a generator with a State among them) answers with all of them: Gradio's
  MCP server wrapped them in one list and then failed to drop the State ("pop index out of range").

    with hub_mcp_server():
        app.launch(mcp_server=True)
"""

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import gradio.mcp
from gradio.components import State
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from hub.visitors import MCP_VISITOR_HEADER, sign_visitor

GradioMCPServer = gradio.mcp.GradioMCPServer
FILE_FORMAT = "a file: a data: URI (data:image/png;base64,...) or the URL of a file uploaded to this server"
MAX_FILES = 64  # list positions converted from strings to files (the matrix takes 12 images)


def is_file_schema(name: str, schema: dict) -> bool:
    """Whether a parameter takes a file: Gradio's FileData (by its schema) or a JSON endpoint's `image`."""
    text = str(schema)
    return name in ("image", "images", "files") or "FileData" in text or "'path'" in text


def with_sessions(app: Any, **kwargs: Any) -> StreamableHTTPSessionManager:
    """Streamable HTTP with sessions, so that each MCP client is one visitor (idle sessions expire: the library's
    own idle timeout and session cap bound them)."""
    return StreamableHTTPSessionManager(app, **{**kwargs, "stateless": False})


class HubMCPServer(GradioMCPServer):
    StreamableHTTPSessionManager = staticmethod(with_sessions)

    def get_tool_to_endpoint(self) -> dict[str, str]:
        tools = {}
        for endpoint_name in self.api_info["named_endpoints"]:
            block_fn = self.get_block_fn_from_endpoint_name(endpoint_name)
            if block_fn is None or block_fn.fn is None:
                continue
            name = self.valid_and_unique_tool_name(self.tool_prefix + endpoint_name.lstrip("/"), set(tools))
            tools[name] = endpoint_name
        return tools

    def get_input_schema(self, tool_name: str, parameters: dict[str, str] | None = None):
        schema, positions = super().get_input_schema(tool_name, parameters)
        for name, prop in schema.get("properties", {}).items():
            if not is_file_schema(name, prop):
                continue
            described = {k: prop[k] for k in ("description", "default") if k in prop}
            many = prop.get("type") == "array" or name in ("images", "files")
            item = {"type": "string", "format": FILE_FORMAT}
            schema["properties"][name] = {**({"type": "array", "items": item} if many else item), **described}
            positions = [p for p in positions if not p or p[0] != name]
            positions += [[name, i] for i in range(MAX_FILES)] if many else [[name]]
        return schema, positions

    def mcp_session(self) -> str:
        """The MCP session of the call being served: the Mcp-Session-Id header (streamable HTTP) or the SSE
        transport's session id; a call without one is a visitor of its own."""
        request = self.mcp_server.request_context.request
        session = None
        if request is not None:
            session = request.headers.get("mcp-session-id") or request.query_params.get("session_id")
        return session or f"call-{uuid.uuid4().hex}"

    def _prepare_tool_call_args(self, name: str, arguments: dict[str, Any]):
        endpoint_name, processed_args, request_headers, block_fn = super()._prepare_tool_call_args(name, arguments)
        request = self.mcp_server.request_context.request
        client = getattr(request, "client", None)
        headers = {k: v for k, v in request_headers.items() if k.lower() not in ("x-forwarded-for", "forwarded")}
        headers[MCP_VISITOR_HEADER] = sign_visitor(self.mcp_session())
        if client is not None:
            headers["x-forwarded-for"] = client.host  # the caller's address, as the server saw it
        return endpoint_name, processed_args, headers, block_fn

    async def _execute_tool_without_progress(self, job: Any) -> list[Any]:
        outputs = await super()._execute_tool_without_progress(job)
        result = outputs[0]
        return list(result) if isinstance(result, tuple) else outputs  # several outputs come as a tuple

    @staticmethod
    def pop_returned_state(components: Sequence[Any], data: Any) -> list:
        """Drop the State outputs (not part of a tool's answer), last first so the others keep their place."""
        data = list(data)
        if len(data) != len(components):
            return data
        for i in reversed(range(len(components))):
            if isinstance(components[i], State):
                data.pop(i)
        return data


@contextmanager
def hub_mcp_server() -> Iterator[None]:
    """While the app is launched, Gradio builds the hub's MCP server instead of its own."""
    gradio.mcp.GradioMCPServer = HubMCPServer
    try:
        yield
    finally:
        gradio.mcp.GradioMCPServer = GradioMCPServer
