"""Claude on Google Vertex AI: a service account's tokens, project and region options."""
from ..adaptors.vertex import PROJECT as GCP_PROJECT
from ..adaptors.vertex import REGION as GCP_REGION
from ..adaptors.vertex import VertexAdaptor
from ..adaptors.vertex import check_credentials as check_service_account
from ..adaptors.vertex import default_base_url as vertex_url
from ..upstream.google import GoogleTransport
from . import ChannelType, Option, register_channel_type

register_channel_type(ChannelType(
    name="vertex", label="vertex (Claude on Google Vertex AI)", adaptor=VertexAdaptor(), transport=GoogleTransport,
    default_base_url=vertex_url, api_key="refused",
    base_url_hint="Empty = https://{region}-aiplatform.googleapis.com (global: https://aiplatform.googleapis.com).",
    options=(Option("project_id", "Google Cloud project id", GCP_PROJECT),
             Option("region", "Vertex AI region, e.g. us-east5, or global", GCP_REGION)),
    credentials=check_service_account, auth_required=True,
    credentials_help="The service account's JSON key file (role roles/aiplatform.user).",
    count_tokens=True))
