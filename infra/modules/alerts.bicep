// Alerts: dead-lettered messages, failed archival jobs, and a growing backlog.
param namePrefix string
param location string
param tags object
param alertEmail string
param appInsightsId string
param serviceBusId string

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-tsarchive-${namePrefix}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'tsarchive'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [{ name: 'operator', emailAddress: alertEmail, useCommonAlertSchema: true }]
  }
}

resource deadLetters 'Microsoft.Insights/metricAlerts@2018-03-01' = if (!empty(serviceBusId)) {
  name: 'ma-tsarchive-dead-letters-${namePrefix}'
  location: 'global'
  tags: tags
  properties: {
    description: 'A message was dead-lettered: it failed maxDeliveryCount times. Inspect the queue\'s dead-letter sub-queue.'
    severity: 2
    enabled: true
    scopes: [serviceBusId]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'dead-lettered'
          criterionType: 'StaticThresholdCriterion'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'DeadletteredMessages'
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Maximum'
        }
      ]
    }
    actions: [{ actionGroupId: actionGroup.id }]
  }
}

resource failedJobs 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'sqr-tsarchive-failed-jobs-${namePrefix}'
  location: location
  tags: tags
  properties: {
    description: 'Archive or drop steps failed (tsarchive.chunks.failed). See GET /api/archival/events?state=failed.'
    severity: 2
    enabled: true
    scopes: [appInsightsId]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    criteria: {
      allOf: [
        {
          query: 'customMetrics | where name == "tsarchive.chunks.failed" | summarize failed = sum(valueSum)'
          timeAggregation: 'Total'
          metricMeasureColumn: 'failed'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    actions: { actionGroups: [actionGroup.id] }
  }
}

resource growingBacklog 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'sqr-tsarchive-backlog-${namePrefix}'
  location: location
  tags: tags
  properties: {
    description: 'Chunks due but not archived keep growing across planner runs: archiving is not keeping up or is stuck.'
    severity: 3
    enabled: true
    scopes: [appInsightsId]
    evaluationFrequency: 'PT1H'
    windowSize: 'P2D'
    criteria: {
      allOf: [
        {
          query: 'customMetrics | where name == "tsarchive.backlog" | summarize backlog = max(valueMax) by bin(timestamp, 1d) | order by timestamp asc | serialize | extend growth = backlog - prev(backlog) | where isnotnull(growth) | summarize growth = max(growth)'
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'growth'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    actions: { actionGroups: [actionGroup.id] }
  }
}
