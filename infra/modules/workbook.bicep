// An Azure Monitor workbook over Application Insights: backlog per table, age of the oldest due chunk, rows and bytes
// archived per day, failures, drop lag and the latest errors. Its panels are in workbook.json (KQL over the metrics
// shared_code/telemetry.py emits; tests/test_infra.py checks each metric exists).
param namePrefix string
param location string
param tags object
param appInsightsId string

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, 'tsarchive-workbook', namePrefix)
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'tsarchive operations (${namePrefix})'
    category: 'workbook'
    sourceId: appInsightsId
    serializedData: loadTextContent('workbook.json')
  }
}

output id string = workbook.id
