"""Claude on AWS Bedrock: SigV4-signed (or a Bedrock API key), a region option."""
from ..adaptors.bedrock import REGION as AWS_REGION
from ..adaptors.bedrock import BedrockAdaptor
from ..adaptors.bedrock import check_credentials as check_aws_credentials
from ..adaptors.bedrock import default_base_url as bedrock_url
from ..upstream.aws import AwsTransport
from . import ChannelType, Option, register_channel_type

register_channel_type(ChannelType(
    name="bedrock", label="bedrock (Claude on AWS Bedrock)", adaptor=BedrockAdaptor(), transport=AwsTransport,
    default_base_url=bedrock_url,
    base_url_hint="Empty = https://bedrock-runtime.{region}.amazonaws.com.",
    options=(Option("region", "AWS region, e.g. us-east-1", AWS_REGION),),
    credentials=check_aws_credentials, auth_required=True,
    credentials_help='{"aws_access_key_id": "…", "aws_secret_access_key": "…", "aws_session_token"?: "…"} '
                     "(SigV4), or a Bedrock API key in the API key field instead.",
    count_tokens=True, count_tokens_fallback=True))  # CountTokens exists for some models and regions only
