"""Interop between Herald's SDK and Confluent's own serializers, both directions.

Usage:
  python sdk_payloads.py URL decode   < {"format": "avro"|"protobuf", "message": NAME, "hex": H} lines
      prints each payload decoded by Confluent's AvroDeserializer / ProtobufDeserializer as JSON
  python sdk_payloads.py URL encode FORMAT TOPIC MESSAGE  < JSON objects, one per line
      prints hex payloads serialized by Confluent's serializers with the subject's latest
      schema (no registration), for the SDK to decode
"""
import base64
import json
import sys
import urllib.request

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

URL = sys.argv[1]
MODE = sys.argv[2]
client = SchemaRegistryClient({"url": URL})


def protobuf_class(schema_id, message):
    """The message class, built from the registry's serialized FileDescriptorProto."""
    with urllib.request.urlopen(f"{URL}/schemas/ids/{schema_id}?format=serialized") as answer:
        body = json.load(answer)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(body["schema"])))
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(message))


if MODE == "decode":
    for line in sys.stdin:
        item = json.loads(line)
        data = bytes.fromhex(item["hex"])
        ctx = SerializationContext("interop", MessageField.VALUE)
        if item["format"] == "avro":
            value = AvroDeserializer(client)(data, ctx)
        else:
            cls = protobuf_class(int.from_bytes(data[1:5], "big"), item["message"])
            decoded = ProtobufDeserializer(cls, {"use.deprecated.format": False})(data, ctx)
            value = json_format.MessageToDict(decoded, preserving_proto_field_name=True)
        print(json.dumps(value, sort_keys=True), flush=True)
elif MODE == "encode":
    fmt, topic, message = sys.argv[3], sys.argv[4], sys.argv[5]
    # A separate client: the serializer's own would cache this non-serialized answer.
    latest = SchemaRegistryClient({"url": URL}).get_latest_version(f"{topic}-value")
    ctx = SerializationContext(topic, MessageField.VALUE)
    conf = {"auto.register.schemas": False, "use.latest.version": True}
    if fmt == "avro":
        serializer = AvroSerializer(client, latest.schema.schema_str, conf=conf)
        encode = serializer
    else:
        cls = protobuf_class(latest.schema_id, message)
        conf["use.deprecated.format"] = False
        serializer = ProtobufSerializer(cls, client, conf)

        def encode(obj, ctx):
            return serializer(json_format.ParseDict(obj, cls()), ctx)
    for line in sys.stdin:
        print(encode(json.loads(line), ctx).hex(), flush=True)
else:
    sys.exit(f"unknown mode {MODE}")
